"""The training loop of makemore part 2: minibatch SGD (or AdamW) on the training split,
with the learning rate on a schedule, periodic evaluation on the dev split, checkpoints.

The loop knows nothing of how a step is computed: an *engine* does forward, backward and
update. `AutogradEngine` is the lecture's loop (loss.backward(), then the optimizer);
`fused.FusedEngine` computes the same step with a hand-written backward pass, faster.
Callbacks see every evaluation, so a caller (the tuner, a notebook) can watch or stop a run
without the trainer growing flags.
"""

from __future__ import annotations

import csv
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .config import ModelConfig, TrainConfig
from .data import Corpus
from .errors import UserError
from .model import MLP, decays, mean_nll
from .runs import load_checkpoint, load_weights, read_run_config, save_checkpoint, write_run_files
from .utils import atomic_write_json

METRIC_FIELDS = ("step", "train_loss", "dev_loss", "lr", "seconds")
# A uniform guess costs log(vocab) ~ 3.3 nats per character on names. A minibatch loss past this
# means the weights have blown up even if float32 has not overflowed to inf/NaN yet.
DIVERGED_LOSS = 1e4


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate for update number `step` (0-based) of `cfg.steps`."""
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "step":  # the lecture: 0.1 for the first 100k steps, then 0.01
        return cfg.lr if step < cfg.decay_at * cfg.steps else cfg.lr * cfg.decay_factor
    if cfg.schedule == "inverse":  # Bengio et al. (2003), section 3: eps_t = eps_0 / (1 + r t)
        return cfg.lr / (1.0 + cfg.decay_rate * step)
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    floor = cfg.lr * cfg.min_lr_frac
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class AutogradEngine:
    """The lecture's step: forward, loss.backward(), optimizer update, all by PyTorch."""

    name = "autograd"

    def __init__(self, model: MLP, cfg: TrainConfig):
        self.model = model
        named = list(model.named_parameters())
        groups = [{"params": [p for n, p in named if decays(n)], "weight_decay": cfg.weight_decay},
                  {"params": [p for n, p in named if not decays(n)], "weight_decay": 0.0}]
        self.names = [n for n, _ in named]
        if cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(groups, lr=cfg.lr)
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=1e-8)

    def step(self, xb: torch.Tensor, yb: torch.Tensor, lr: float) -> float:
        _, loss = self.model(xb, yb)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        return loss.item()

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, p in self.model.named_parameters():
            for key, value in self.optimizer.state.get(p, {}).items():
                out[f"optim.{key}.{name}"] = torch.as_tensor(value).detach().clone().cpu()
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, p in self.model.named_parameters():
            entries = {k.split(".")[1]: v for k, v in state.items() if k.startswith("optim.") and k.endswith("." + name)}
            if entries:
                self.optimizer.state[p] = {k: v.to(p.device) if k != "step" else v.cpu() for k, v in entries.items()}


def make_engine(model: MLP, cfg: TrainConfig):
    """`auto` takes the fused engine whenever it supports the options, else autograd."""
    if cfg.engine == "autograd":
        return AutogradEngine(model, cfg)
    from . import fused

    reason = fused.unsupported_reason(model.cfg, cfg)
    if reason is None:
        return fused.FusedEngine(model, cfg)
    if cfg.engine == "fused":
        raise UserError(f"--engine fused does not support this run ({reason}); use --engine autograd")
    return AutogradEngine(model, cfg)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but PyTorch sees no CUDA GPU here; use --device cpu")
    return device


@dataclass
class TrainResult:
    model: MLP
    status: str  # "completed", "interrupted" or "diverged"
    summary: dict
    run_dir: Path | None = None
    message: str = ""
    history: list[dict] = field(default_factory=list)


class _Progress:
    """A tqdm bar on a terminal; plain log lines at each evaluation otherwise (CI, pipes)."""

    def __init__(self, total: int, start: int, enabled: bool | None):
        self.tty = sys.stderr.isatty() if enabled is None else enabled
        self.quiet = enabled is False
        self.bar = None
        if self.tty and not self.quiet:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, leave=True)

    def update(self, n: int, loss: float, lr: float) -> None:
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.3g}", refresh=False)

    def log(self, row: dict, total: int, rate: float, label: str = "") -> None:
        """`label` says whose row it is when several runs train at once (population.py)."""
        if self.quiet or self.bar is not None:
            if self.bar is not None and row.get("dev_loss") is not None:
                self.bar.write(f"step {row['step']:>7}: {label}dev {row['dev_loss']:.4f}")
            return
        eta = (total - row["step"]) / rate if rate > 0 else 0.0
        train = f"{row['train_loss']:.4f}" if row.get("train_loss") is not None else "  -   "
        print(f"step {row['step']:>7}/{total}  {label}train {train}  dev {row['dev_loss']:.4f}  "
              f"lr {row['lr']:.3g}  {rate:,.0f} steps/s  eta {eta:,.0f}s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _append_metrics(path: Path, rows: list[dict]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRIC_FIELDS})


def _truncate_metrics(path: Path, last_step: int) -> None:
    """On resume, drop rows logged after the checkpoint we restart from."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) <= last_step]
    path.unlink()
    _append_metrics(path, [{k: (v if v != "" else None) for k, v in r.items()} for r in rows])


class RunLog:
    """One run's record as it trains: metrics.csv, the best-on-dev weights and checkpoint, the
    last checkpoint, and summary.json at the end. train() keeps one; a population
    (population.py) keeps one per member, so that each member is an ordinary run directory."""

    def __init__(self, model: MLP, run_dir: Path | None, best_dev: float = math.inf, best_step: int = 0):
        self.model, self.run_dir = model, run_dir
        self.metrics_path = run_dir / "metrics.csv" if run_dir is not None else None
        self.best_dev, self.best_step = best_dev, best_step
        self.best_weights = self.weights_copy()
        self.history: list[dict] = []  # the rows with a dev loss
        self.pending: list[dict] = []  # rows not yet in metrics.csv (written at each evaluation)

    def weights_copy(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.model.named_parameters()}

    def record(self, step: int, train_loss: float | None, dev: float | None, lr: float, seconds: float) -> dict:
        """A metrics row; with a dev loss, keep the weights if they are the best so far."""
        row = {"step": step, "train_loss": train_loss, "dev_loss": dev, "lr": lr, "seconds": round(seconds, 3)}
        self.pending.append(row)
        if dev is None:
            return row
        self.history.append(row)
        if dev < self.best_dev:
            self.best_dev, self.best_step = dev, step
            self.best_weights = self.weights_copy()
            if self.run_dir is not None:
                save_checkpoint(self.run_dir / "best.safetensors", self.best_weights, {"step": step, "dev_loss": dev})
        self.flush()
        return row

    def flush(self) -> None:
        if self.metrics_path is not None and self.pending:
            _append_metrics(self.metrics_path, self.pending)
        self.pending.clear()

    def save_last(self, step: int, state: dict[str, torch.Tensor], seconds: float, engine: str) -> None:
        """Weights and `state` (optimizer, RNGs) to resume from."""
        if self.run_dir is None:
            return
        weights = dict(self.model.named_parameters())
        save_checkpoint(self.run_dir / "last.safetensors", {**weights, **state},
                        {"step": step, "best_dev": self.best_dev, "best_step": self.best_step,
                         "seconds": seconds, "engine": engine})

    def finish(self, examples: tuple[torch.Tensor, ...], steps: int, seconds: float, steps_per_second: float,
               engine: str, device: str, status: str, **extra) -> dict:
        """Put the best-on-dev weights back in the model and report them, evaluated on the whole
        of each split (examples = Xtr, Ytr, Xdev, Ydev); writes summary.json (with `extra`)."""
        Xtr, Ytr, Xdev, Ydev = examples
        with torch.no_grad():
            for n, p in self.model.named_parameters():
                p.copy_(self.best_weights[n])
        self.model.eval()
        summary = {
            "params": self.model.num_params(),
            "steps": steps,
            "best_step": self.best_step,
            "train_loss": mean_nll(self.model, Xtr, Ytr),
            "dev_loss": mean_nll(self.model, Xdev, Ydev),
            "seconds": round(seconds, 3),
            "steps_per_second": round(steps_per_second, 1),
            "engine": engine,
            "device": device,
            "status": status,
            **extra,
        }
        if self.run_dir is not None:
            atomic_write_json(self.run_dir / "summary.json", summary)
        return summary


def check_data(corpus: Corpus, model_cfg: ModelConfig, train_cfg: TrainConfig) -> None:
    model_cfg.validate()
    train_cfg.validate()
    if model_cfg.vocab_size != corpus.vocab.size:
        raise UserError(f"model vocab_size {model_cfg.vocab_size} != data vocabulary {corpus.vocab.size}")


def diverged_message(step: int, loss: float, lr: float, log: RunLog) -> str:
    return (f"training stopped at step {step}: the loss became {loss:.4g} - the learning rate "
            f"({lr:g}) is most likely too high; the best checkpoint (step {log.best_step}, dev "
            f"{log.best_dev:.4f}) is kept")


def train(corpus: Corpus, model_cfg: ModelConfig, train_cfg: TrainConfig, out: str | Path | None = None,
          callbacks: tuple[Callable[[dict], None], ...] = (), progress: bool | None = None,
          _resume_from: dict | None = None) -> TrainResult:
    """Train an MLP on corpus' training split; with `out`, keep a run directory there.

    `callbacks` are called with each evaluation row ({step, train_loss, dev_loss, lr, seconds});
    an exception raised by one (e.g. optuna.TrialPruned) stops training and propagates.
    """
    check_data(corpus, model_cfg, train_cfg)
    device = resolve_device(train_cfg.device)
    if train_cfg.threads > 0:
        torch.set_num_threads(train_cfg.threads)
    run_dir = Path(out) if out is not None else None

    Xtr, Ytr = (t.to(device) for t in corpus.examples("train", model_cfg.block_size))
    Xdev, Ydev = (t.to(device) for t in corpus.examples("dev", model_cfg.block_size))

    torch.manual_seed(train_cfg.seed)  # dropout in the autograd engine draws from torch's global RNG
    model = MLP(model_cfg, seed=train_cfg.seed).to(device)
    batch_rng = torch.Generator().manual_seed(train_cfg.seed + 1)
    engine = make_engine(model, train_cfg)
    start, best_dev, best_step, elapsed = 0, math.inf, 0, 0.0
    if _resume_from is not None:
        tensors, meta = _resume_from["tensors"], _resume_from["meta"]
        load_weights(model, tensors, _resume_from["path"])
        engine.load_state_dict({k: v for k, v in tensors.items()
                                if not k.startswith("rng.") and k not in dict(model.named_parameters())})
        batch_rng.set_state(tensors["rng.batch"])
        torch.set_rng_state(tensors["rng.torch"])
        start, best_dev, best_step, elapsed = meta["step"], meta["best_dev"], meta["best_step"], meta["seconds"]
        if meta.get("engine") and meta["engine"] != engine.name:
            print(f"note: resuming a {meta['engine']} run with the {engine.name} engine", file=sys.stderr)
    elif run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=False)
        write_run_files(run_dir, model_cfg, train_cfg, corpus.vocab, corpus.splits, corpus.source, corpus.seed)

    log = RunLog(model, run_dir, best_dev, best_step)

    def save_last(step: int) -> None:
        if run_dir is not None:
            state = {**engine.state_dict(), "rng.batch": batch_rng.get_state(), "rng.torch": torch.get_rng_state()}
            log.save_last(step, state, seconds(), engine.name)

    def seconds() -> float:
        """Training time of this run, across resumes."""
        return elapsed + time.perf_counter() - t0

    def evaluate_dev() -> float:
        model.eval()
        loss = mean_nll(model, Xdev, Ydev)
        model.train()
        return loss

    if log.metrics_path is not None and _resume_from is not None:
        _truncate_metrics(log.metrics_path, start)
    eval_every = train_cfg.eval_every
    log_every = max(1, min(eval_every, train_cfg.steps // 2000))
    bar = _Progress(train_cfg.steps, start, progress)
    status, message = "completed", ""
    interval_loss, interval_n, bar_pending = 0.0, 0, 0
    lr = lr_at(train_cfg, start)

    def record(step: int, dev: float | None) -> None:
        nonlocal interval_loss, interval_n
        row = log.record(step, interval_loss / interval_n if interval_n else None, dev, lr, seconds())
        interval_loss, interval_n = 0.0, 0
        if dev is None:
            return
        bar.log(row, train_cfg.steps, (step - start) / max(1e-9, time.perf_counter() - t0))
        for callback in callbacks:
            callback(row)

    model.train()
    t0 = time.perf_counter()
    step = start
    try:
        if start == 0:
            record(0, evaluate_dev())
            save_last(0)
        n_train = Xtr.shape[0]
        while step < train_cfg.steps:
            lr = lr_at(train_cfg, step)
            ix = torch.randint(0, n_train, (train_cfg.batch_size,), generator=batch_rng)
            if device != "cpu":
                ix = ix.to(device)
            loss = engine.step(Xtr[ix], Ytr[ix], lr)
            step += 1
            if not math.isfinite(loss) or loss > DIVERGED_LOSS:
                status = "diverged"
                message = diverged_message(step, loss, lr, log)
                break
            interval_loss += loss
            interval_n += 1
            bar_pending += 1
            if step % log_every == 0 or step == train_cfg.steps or step % eval_every == 0:
                bar.update(bar_pending, loss, lr)
                bar_pending = 0
                is_eval = step % eval_every == 0 or step == train_cfg.steps
                record(step, evaluate_dev() if is_eval else None)
                if is_eval:
                    save_last(step)
    except KeyboardInterrupt:
        status = "interrupted"
        save_last(step)
        message = f"interrupted at step {step}; progress saved"
        if run_dir is not None:
            message += f". Continue with: makemore train --resume {run_dir}"
    finally:
        bar.close()
    run_seconds = time.perf_counter() - t0
    if status == "diverged":
        log.flush()
    summary = log.finish((Xtr, Ytr, Xdev, Ydev), step, elapsed + run_seconds,
                         (step - start) / max(run_seconds, 1e-9), engine.name, device, status)
    return TrainResult(model, status, summary, run_dir, message, log.history)


def resume(run_dir: str | Path, steps: int | None = None, progress: bool | None = None,
           callbacks: tuple[Callable[[dict], None], ...] = ()) -> TrainResult:
    """Continue RUN from its last checkpoint (weights, optimizer and RNG state)."""
    from dataclasses import replace

    from .runs import load_run

    run_dir = Path(run_dir)
    read_run_config(run_dir)
    tensors, meta = load_checkpoint(run_dir / "last.safetensors")
    for key in ("rng.batch", "rng.torch"):
        if key not in tensors:
            raise UserError(f"{run_dir}/last.safetensors lacks {key}: it cannot be resumed")
    run = load_run(run_dir, checkpoint="last")
    train_cfg = run.train_cfg if steps is None else replace(run.train_cfg, steps=steps)
    corpus = Corpus(run.data_source, [w for s in run.splits.values() for w in s], run.vocab, run.splits, run.split_seed)
    if meta["step"] >= train_cfg.steps:
        raise UserError(f"{run_dir} already finished its {train_cfg.steps} steps; pass --steps N to train further")
    return train(corpus, run.model_cfg, train_cfg, out=run_dir, progress=progress, callbacks=callbacks,
                 _resume_from={"tensors": tensors, "meta": meta, "path": run_dir / "last.safetensors"})
