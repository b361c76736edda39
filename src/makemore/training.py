"""The training loop of makemore part 2: minibatch SGD (or AdamW) on the training split, with
the learning rate on a schedule, periodic evaluation on the dev split, checkpoints.

One loop trains K >= 1 *members* at once: K = 1 is a plain run; K seeds of one config are a
seed ensemble; K learning rates are a sweep's population. The loop knows nothing of how a step
is computed: an engine (engines.py) does forward, backward and update for all members, and
each member keeps its own run directory, metrics, best checkpoint and fate (a member that
diverges stops alone). Member k computes what a solo run with its config computes.

Minibatches are the lecture's `ix = torch.randint(0, Xtr.shape[0], (32,))` from a generator
seeded seed + 1; their contexts are gathered from the compact examples (data.Examples) a chunk
of steps at a time. The dev loss during training is estimated on a fixed random subset of the
dev split (`eval_examples`, the same subset for every run on the same data, so that runs
compare); the final figures in summary.json are the whole dev split and a fixed subset of at
most FINAL_TRAIN_EXAMPLES training examples. Callbacks see every evaluation, so a caller (the
tuner, a notebook) can watch or stop a run without the trainer growing flags.
"""

from __future__ import annotations

import csv
import math
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from . import distributed as dist
from . import models
from .budget import Plan, ThreadTrial
from .config import TrainConfig
from .data import Corpus, Examples
from .engines import make_engine, resolve_device, resolve_precision
from .errors import UserError
from .models import Model, ModelConfig
from .ngram import teacher_targets
from .distributed import split_nll  # [dist] predict.split_nll, each rank of a data-parallel run evaluating a share
from .predict import ensemble_predictor, model_predictor
from .runs import load_checkpoint, load_weights, read_run_config, save_checkpoint, write_ensemble, write_run_files
from .utils import atomic_write_json, native_bfloat16

METRIC_FIELDS = ("step", "train_loss", "dev_loss", "lr", "seconds")
# A uniform guess costs log(vocab) ~ 3.3 nats per character on names. A minibatch loss past this
# means the weights have blown up even if float32 has not overflowed to inf/NaN yet.
DIVERGED_LOSS = 1e4
# The summary's train loss is over at most this many training examples (a fixed random subset;
# all of them for the lecture's 182,441): ten times the estimates' examples during training.
FINAL_TRAIN_EXAMPLES = 250_000
# Settings every member of one loop shares: the shape of a step (batch size), the loop itself
# (steps, evaluations) and where it runs; anything else (lr, schedule, seed, weight decay,
# betas, optimizer) may differ from member to member.
SHARED = ("steps", "batch_size", "eval_every", "eval_examples", "device", "threads", "engine", "precision",
          "teacher", "teacher_context")
# Minibatch contexts are gathered this many examples at a time (a chunk of steps).
GATHER_EXAMPLES = 1 << 16


def lr_at(cfg: TrainConfig, step: int, total: int | None = None) -> float:
    """Learning rate for update number `step` (0-based) of `total` (default cfg.steps; a budget
    run plans its own total, see budget.py)."""
    if total is not None and total != cfg.steps:
        cfg = replace(cfg, steps=total)
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


class Minibatches:
    """Each member's minibatches, drawn as the lecture draws them: torch.randint(0, n, (B,))
    from a generator seeded seed + 1, once per step. The CPU generator draws serially, so one
    draw of c*B indices equals c draws of B: we draw (and gather the contexts of) a chunk of
    steps at a time. [dist] `share`: which of each minibatch's B positions this process gathers
    (its slice of the global batch in data-parallel training; all of them otherwise).
    `whole_words`: draw from the windows that tile the words (Examples.word_windows), for a
    sequence model, which predicts every character of the window it reads: drawn from every
    position, a word's first characters would be predicted once per later window of the word,
    weighting the loss towards them; eval weighs every character once."""

    def __init__(self, examples: Examples, block_size: int, seeds: Sequence[int], B: int,
                 states: Sequence[torch.Tensor | None] | None = None, share: slice = slice(None),
                 whole_words: bool = False):
        self.pool = examples.word_windows(block_size) if whole_words else None
        self.examples, self.block_size, self.B = examples, block_size, B
        self.n = len(examples) if self.pool is None else len(self.pool)
        self.share = share
        self.generators = [torch.Generator().manual_seed(s + 1) for s in seeds]
        for g, state in zip(self.generators, states or []):
            if state is not None:
                g.set_state(state)
        self.chunk_steps = max(1, GATHER_EXAMPLES // B)
        self.first, self.steps_held, self.states = 0, 0, []
        self.idx = self.y = self.positions_held = None

    def at(self, step: int, last: int) -> tuple[np.ndarray, np.ndarray]:
        """(K, B, block_size) contexts and (K, B) targets of update `step` (0-based); chunks
        never reach past update `last`."""
        i = step - self.first
        if self.idx is None or i >= self.steps_held:
            self.first, i = step, 0
            c = min(self.chunk_steps, last - step + 1)
            self.states = [g.get_state() for g in self.generators]
            positions = torch.stack([torch.randint(0, self.n, (c * self.B,), generator=g)
                                     for g in self.generators]).numpy()  # (K, c*B)
            K = len(self.generators)
            if self.pool is not None:
                positions = self.pool[positions]
            positions = positions.reshape(K, c, self.B)[:, :, self.share]  # [dist] this process's share
            b = positions.shape[2]
            X, Y = self.examples.batch(positions.reshape(-1), self.block_size)
            self.idx = X.reshape(K, c, b, self.block_size)
            self.y = Y.reshape(K, c, b)
            self.positions_held = positions
            self.steps_held = c
        return self.idx[:, i], self.y[:, i]

    def positions(self, step: int) -> np.ndarray:
        """(K, B) positions in the split of update `step`'s examples (after `at(step, ...)`)."""
        return self.positions_held[:, step - self.first]

    def state(self, k: int, steps: int) -> torch.Tensor:
        """Member k's generator state after `steps` updates, as a solo run saves it (rng.batch)."""
        used = steps - self.first
        if self.idx is None or used >= self.steps_held:
            return self.generators[k].get_state()
        g = torch.Generator()
        g.set_state(self.states[k])
        if used > 0:
            torch.randint(0, self.n, (used * self.B,), generator=g)
        return g.get_state()


@dataclass
class TrainResult:
    model: Model
    status: str  # "completed", "interrupted" or "diverged"
    summary: dict
    run_dir: Path | None = None
    message: str = ""
    history: list[dict] = field(default_factory=list)
    signal: str | None = None  # "SIGINT" or "SIGTERM" when interrupted


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
        """`label` says whose row it is when several members train at once."""
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
    """One member's record as it trains: metrics.csv, the best-on-dev weights and checkpoint,
    the last checkpoint, and summary.json at the end: an ordinary run directory per member."""

    def __init__(self, model: Model, run_dir: Path | None, best_dev: float = math.inf, best_step: int = 0):
        self.model, self.run_dir = model, run_dir
        self.metrics_path = run_dir / "metrics.csv" if run_dir is not None else None
        self.best_dev, self.best_step = best_dev, best_step
        self.best_weights = self.weights_copy()
        self.history: list[dict] = []  # the rows with a dev loss
        self.pending: list[dict] = []  # rows not yet in metrics.csv (written at each evaluation)

    def weights_copy(self) -> dict[str, torch.Tensor]:
        return {n: t.detach().clone() for n, t in self.model.state_dict().items()}  # buffers too

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
        weights = self.model.state_dict()
        save_checkpoint(self.run_dir / "last.safetensors", {**weights, **state},
                        {"step": step, "best_dev": self.best_dev, "best_step": self.best_step,
                         "seconds": seconds, "engine": engine})

    def finish(self, corpus: Corpus, steps: int, seconds: float, steps_per_second: float,
               engine: str, device: str, status: str, progress: bool | None, final_examples: int = 0,
               **extra) -> dict:
        """Put the best-on-dev weights back in the model and report them: the dev loss over
        the whole dev split, the train loss over a fixed subset of the training split (all of
        it up to FINAL_TRAIN_EXAMPLES); with `final_examples`, each over a fixed subset of that
        many (tune's trials on a big list: the final losses cost time in proportion to the
        data, not to the run). Writes summary.json (with `extra`)."""
        with torch.no_grad():
            for n, t in self.model.state_dict().items():
                t.copy_(self.best_weights[n])
        self.model.eval()
        predictor = model_predictor(self.model)
        train_ex, dev_ex = corpus.encoded("train"), corpus.encoded("dev")
        train_pos = train_ex.subset(final_examples or FINAL_TRAIN_EXAMPLES)
        dev_pos = dev_ex.subset(final_examples) if final_examples else None
        summary = {
            "model": self.model.cfg.name,
            "params": self.model.num_params(),
            "steps": steps,
            "best_step": self.best_step,
            "train_loss": split_nll(predictor, train_ex, train_pos, progress, "train loss"),
            "train_loss_examples": int(len(train_pos)),
            "dev_loss": split_nll(predictor, dev_ex, dev_pos, progress, "dev loss"),
            "dev_loss_examples": len(dev_ex) if dev_pos is None else int(len(dev_pos)),
            "seconds": round(seconds, 3),
            "steps_per_second": round(steps_per_second, 1),
            "engine": engine,
            "device": device,
            "status": status,
            **({"final_examples": final_examples} if final_examples else {}),
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


class StopSignals:
    """While training, SIGINT (Ctrl-C) and SIGTERM (kill, a job scheduler, a container stop)
    ask the loop to stop at the end of the current step; it then saves and reports, the same
    way for both. A second Ctrl-C interrupts at once. Only the main thread can set signal
    handlers; elsewhere the loop stops on KeyboardInterrupt alone.

    [dist] `deferred` (data-parallel training): a signal is only noted in `asked`; the ranks
    agree on `received` after each step (distributed.agree), so that all stop at the same step."""

    NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}

    def __init__(self, deferred: bool = False):
        self.deferred = deferred

    def __enter__(self):
        self.received: str | None = None
        self.asked: str | None = None
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.NAMES:
                self.previous[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.deferred:
            self.asked = self.asked or self.NAMES[signum]
            return
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = self.received or self.NAMES[signum]

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


def make_run_dir(run_dir: Path) -> None:
    """Create a new run directory; one that exists (another run, perhaps started a moment ago
    with the same --out) is a UserError, and is left as it is."""
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir()
    except FileExistsError:
        raise UserError(f"{run_dir} already exists; pick another --out, or continue it with --resume {run_dir}") from None
    except OSError as e:
        raise UserError(f"cannot create run directory {run_dir}: {e.strerror}") from None


def train_members(corpus: Corpus, model_cfg: ModelConfig, train_cfgs: Sequence[TrainConfig],
                  out_dirs: Sequence[str | Path | None] | None = None, progress: bool | None = None,
                  callbacks: tuple[Callable[[dict], None], ...] = (), resumed: Sequence[dict] | None = None,
                  extra_summary: dict | None = None) -> list[TrainResult]:
    """The training loop: one model per train config, trained together; with `out_dirs`,
    member k keeps an ordinary run directory at out_dirs[k].

    `callbacks` are called with each evaluation row ({step, train_loss, dev_loss, lr, seconds,
    member}); an exception raised by one (e.g. optuna.TrialPruned) stops training and
    propagates. `resumed` (from `resume`) holds each member's last checkpoint to continue from.
    """
    train_cfgs = list(train_cfgs)
    K = len(train_cfgs)
    if K == 0:
        raise UserError("a run needs at least one member")
    for cfg in train_cfgs:
        check_data(corpus, model_cfg, cfg)
    for name in SHARED:
        values = {getattr(cfg, name) for cfg in train_cfgs}
        if len(values) > 1:
            raise UserError(f"the members of one run must share {name.replace('_', '-')} "
                            f"(got {', '.join(sorted(map(str, values)))})")
    run_dirs = [None] * K if out_dirs is None else [None if d is None else Path(d) for d in out_dirs]
    named = [d for d in run_dirs if d is not None]
    if len(run_dirs) != K or len(set(named)) != len(named):
        raise UserError(f"need {K} distinct run directories, one per member, got {len(run_dirs)}")
    dist.check(train_cfgs, progress)  # [dist] data parallel: rank 0 alone writes and prints
    progress, run_dirs = dist.progress(progress), dist.writer_dirs(run_dirs)
    first = train_cfgs[0]
    device = resolve_device(first.device)
    threads = torch.get_num_threads()
    if first.threads > 0:
        torch.set_num_threads(first.threads)
    created: list[Path] = []
    try:
        members = [models.build(model_cfg, seed=cfg.seed).to(device) for cfg in train_cfgs]
        for model in members:
            model.train()
            model.observe_training_data(corpus.encoded("train"))  # a resumed one's checkpoint then overrides it
        precision = resolve_precision(model_cfg, first, device)
        if precision == "bfloat16" and not native_bfloat16(device) and dist.is_writer():
            print(f"note: this {device.upper()} has no native bfloat16: --precision bfloat16 is emulated, "
                  f"slower than float32", file=sys.stderr)
        engine_cfgs = [replace(cfg, precision=precision) for cfg in dist.rank_seeded(train_cfgs)]
        engine = make_engine(members, engine_cfgs)  # [dist] dropout seed + rank
        dist.attach(engine)  # [dist] gradients averaged across the ranks
        return _train_loop(corpus, model_cfg, train_cfgs, run_dirs, members, engine, device, progress, callbacks,
                           resumed, extra_summary, created)
    except BaseException:
        # a run directory this call created that never reached its first checkpoint is of no
        # use: leave nothing behind (one that has a checkpoint is kept: it can be resumed)
        for run_dir in created:
            if not (run_dir / "best.safetensors").exists():
                shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(threads)  # the caller's setting, as it was (a notebook trains again)


def _train_loop(corpus, model_cfg, train_cfgs, run_dirs, members, engine, device, progress, callbacks, resumed,
                extra_summary, created: list[Path]) -> list[TrainResult]:
    """train_members' loop, once its members and engine are made; the run directories it
    creates are appended to `created`."""
    K, first = len(train_cfgs), train_cfgs[0]
    starts, logs = [0] * K, []
    with dist.together():  # [dist] an error on one rank (a run directory that exists) stops all
        for k, (model, run_dir) in enumerate(zip(members, run_dirs)):
            if resumed is not None:
                tensors, meta = resumed[k]["tensors"], resumed[k]["meta"]
                load_weights(model, tensors, resumed[k]["path"])
                engine.load_member_state(k, dist.rank_state(tensors))  # [dist] this rank's random state
                starts[k] = meta["step"]
                if meta.get("engine") and meta["engine"] != engine.name and dist.is_writer():
                    print(f"note: resuming a {meta['engine']} run with the {engine.name} engine", file=sys.stderr)
                logs.append(RunLog(model, run_dir, meta["best_dev"], meta["best_step"]))
                if run_dir is not None:
                    _truncate_metrics(run_dir / "metrics.csv", starts[k])
            else:
                if run_dir is not None:
                    make_run_dir(run_dir)
                    created.append(run_dir)
                    write_run_files(run_dir, model_cfg, train_cfgs[k], corpus.vocab, corpus.splits, corpus.source,
                                    corpus.seed, corpus.min_char_count)
                logs.append(RunLog(model, run_dir))
    dist.broadcast_models(members)  # [dist] every rank starts from rank 0's weights
    if len(set(starts)) > 1:
        raise UserError("the members of one run must resume from the same step")
    start = starts[0]
    elapsed = resumed[0]["meta"]["seconds"] if resumed is not None else 0.0

    train_ex, dev_ex = corpus.encoded("train"), corpus.encoded("dev")
    dev_pos = dev_ex.subset(first.eval_examples)
    sequence = members[0].sequence  # predicts every character of its window: trains on whole words
    batches = Minibatches(train_ex, model_cfg.block_size, [c.seed for c in train_cfgs], first.batch_size,
                          [r["tensors"]["rng.batch"] for r in resumed] if resumed is not None else None,
                          share=dist.batch_share(first.batch_size),  # [dist] this rank's share of each minibatch
                          whole_words=sequence)
    teacher, teacher_seconds = None, 0.0
    if first.teacher > 0:  # distillation from a count model: its distribution for every example
        t_teacher = time.perf_counter()
        teacher = teacher_targets(corpus, first.teacher_context)
        teacher_seconds = time.perf_counter() - t_teacher

    def batch_teacher(step: int) -> np.ndarray:
        """The teacher's distributions for update `step`'s targets: (K, B, V), or for a sequence
        model one per column of each window, (K, B, T, V), zero where a column predicts nothing."""
        positions = batches.positions(step)
        if not sequence:
            return teacher[positions]
        predicted, valid = train_ex.window_positions(positions, model_cfg.block_size)
        return teacher[predicted] * valid[..., None]

    steps, eval_every = first.steps, first.eval_every
    # a budget run's teacher is made inside its budget
    plan = Plan(max(first.budget - teacher_seconds, 1e-3), steps, start) if first.budget > 0 else None
    trial = None  # a budget run with torch's default threads picks its own (budget.ThreadTrial)
    if plan is not None:
        eval_every = plan.eval_every
        if first.threads == 0 and device == "cpu" and dist.world() is None and torch.get_num_threads() > 1:
            trial = ThreadTrial(torch.get_num_threads(), first.budget)
    eval_seconds = 0.0  # time spent on dev estimates: a budget plan counts steps without it
    log_every = max(1, min(eval_every, steps // 2000))
    bar = _Progress(steps, start, progress)
    active = np.ones(K, dtype=bool)  # not diverged
    status, messages, last_step = ["completed"] * K, [""] * K, [start] * K
    interrupted_by = None
    interval_loss, interval_n, bar_pending = np.zeros(K), 0, 0
    lrs = np.array([lr_at(cfg, start, steps) for cfg in train_cfgs])
    t0 = time.perf_counter()

    def seconds() -> float:
        """Training time of this run, across resumes."""
        return elapsed + time.perf_counter() - t0

    def save_last(k: int, step: int) -> None:
        if run_dirs[k] is None and dist.world() is None:
            return
        state = {**engine.member_state(k), "rng.batch": batches.state(k, step)}
        state = dist.gather_rank_state(state, step)  # [dist] every rank's random state, for rank 0 to save
        if run_dirs[k] is not None:
            logs[k].save_last(step, state, seconds(), engine.name)

    def evaluate_dev(k: int) -> float:
        model = members[k]
        loss = split_nll(model_predictor(model), dev_ex, dev_pos)
        model.train()
        return loss

    def record(step: int, is_eval: bool) -> None:
        nonlocal interval_n, eval_seconds
        rows = {}
        t_eval = time.perf_counter()
        devs = {k: evaluate_dev(k) if is_eval else None for k in np.flatnonzero(active)}
        if is_eval and plan is not None and not plan.calibrated:
            plan.evaluated(time.perf_counter() - t_eval)
            if step == start == 0:
                plan.check_feasible()  # before anything is written: a budget too small is one error line
        for k in np.flatnonzero(active):
            dev = devs[k]
            train_loss = float(interval_loss[k]) / interval_n if interval_n else None
            rows[k] = logs[k].record(step, train_loss, dev, float(lrs[k]), seconds())
            if is_eval:
                save_last(k, step)
        interval_loss[:], interval_n = 0.0, 0
        if is_eval:
            eval_seconds += time.perf_counter() - t_eval
            if plan is not None and plan.calibrated:
                plan.evaluated(time.perf_counter() - t_eval)
        if not is_eval or not rows:
            return
        best = min(rows, key=lambda k: rows[k]["dev_loss"])
        label = ""
        if K > 1:
            name = run_dirs[best].name if run_dirs[best] is not None else f"#{best}"
            label = f"best of {len(rows)} ({name}): "
        bar.log(rows[best], steps, (step - start) / max(1e-9, time.perf_counter() - t0), label=label)
        for callback in callbacks:
            for k, row in rows.items():
                callback({**row, "member": int(k)})

    def stop_all(how: str) -> None:
        nonlocal interrupted_by
        interrupted_by = how
        for k in np.flatnonzero(active):
            status[k] = "interrupted"
            messages[k] = f"interrupted at step {step}; progress saved"
            save_last(k, step)
            if run_dirs[k] is not None:
                messages[k] += f". Continue with: makemore train --resume {run_dirs[k]}{dist.resume_flags()}"

    def follow_plan(step: int) -> None:
        """A budget run: (re)plan the steps from the time they take, as budget.Plan says."""
        nonlocal steps, eval_every, log_every
        used = time.perf_counter() - t0
        plan.replan(step, used, used - eval_seconds)
        steps, eval_every = plan.total, plan.eval_every
        log_every = max(1, min(eval_every, steps // 2000))
        if bar.bar is not None:
            bar.bar.total = steps

    step = start
    dist.start_step(start)
    with StopSignals(deferred=dist.world() is not None) as stop:  # [dist] the ranks agree when to stop
        try:
            if start == 0:
                record(0, True)
            while step < steps and active.any() and stop.received is None:
                if plan is not None:
                    used = time.perf_counter() - t0
                    if trial is not None and not trial.done:
                        threads = trial.tick(t0 + used)
                        if threads is not None:
                            torch.set_num_threads(threads)
                            if trial.done:  # the plan times the steps from here, on these threads
                                plan.restart_timing(step, used - eval_seconds)
                    if plan.due(step, used) and (trial is None or trial.done):
                        follow_plan(step)
                    if plan.over(used):
                        break
                lrs = np.array([lr_at(cfg, step, steps) if on else 0.0 for cfg, on in zip(train_cfgs, active)])
                idx, y = batches.at(step, steps - 1)
                losses = engine.step(idx, y, lrs, None if teacher is None else batch_teacher(step))
                losses = dist.agree(losses, stop)  # [dist] the global minibatch's losses; a signal stops every rank
                step += 1
                bad = active & ~(losses <= DIVERGED_LOSS)  # inf, NaN or blown up
                for k in np.flatnonzero(bad):
                    status[k], last_step[k] = "diverged", step
                    messages[k] = diverged_message(step, float(losses[k]), float(lrs[k]), logs[k])
                    logs[k].flush()
                    engine.freeze(k, logs[k].best_weights)
                    active[k] = False
                interval_loss += np.where(active, losses, 0.0)
                interval_n += 1
                bar_pending += 1
                if step % log_every == 0 or step == steps or step % eval_every == 0:
                    if active.any():  # the bar shows the members' mean loss
                        bar.update(bar_pending, float(losses[active].mean()), float(lrs[active].max()))
                    bar_pending = 0
                    record(step, step % eval_every == 0 or step == steps)
            if plan is not None and plan.stopped_early and active.any():
                record(step, True)  # the budget ran out before the plan: evaluate where it stopped
            if stop.received is not None:
                stop_all(stop.received)
        except KeyboardInterrupt:  # a second Ctrl-C, or Ctrl-C outside the main thread
            stop_all("SIGINT")
        finally:
            bar.close()
    run_seconds = time.perf_counter() - t0
    results = []
    for k, (model, log) in enumerate(zip(members, logs)):
        done = step if status[k] != "diverged" else last_step[k]
        log.flush()
        summary = log.finish(corpus, done, elapsed + run_seconds, (done - start) / max(run_seconds, 1e-9),
                             engine.name, device, status[k], progress, train_cfgs[k].final_examples,
                             precision=engine.precision,
                             **({"members": K} if K > 1 else {}), **(plan.summary() if plan else {}),
                             **(trial.summary() if trial is not None and trial.done else {}),
                             **({"teacher_seconds": teacher_seconds} if teacher is not None else {}),
                             **dist.summary(), **(extra_summary or {}))
        with torch.no_grad():
            for p in model.parameters():
                p.data = p.data.clone()  # its own storage, free of the engine's buffers
        results.append(TrainResult(model, status[k], summary, run_dirs[k], messages[k], log.history, interrupted_by))
    return results


def train(corpus: Corpus, model_cfg: ModelConfig, train_cfg: TrainConfig, out: str | Path | None = None,
          callbacks: tuple[Callable[[dict], None], ...] = (), progress: bool | None = None,
          extra_summary: dict | None = None) -> TrainResult:
    """Train one model on corpus' training split; with `out`, keep a run directory there.
    `extra_summary` is added to summary.json (e.g. the recipe a budget run chose)."""
    return train_members(corpus, model_cfg, [train_cfg], [out], progress, callbacks,
                         extra_summary=extra_summary)[0]


def train_population(corpus: Corpus, model_cfg: ModelConfig, train_cfgs: Sequence[TrainConfig],
                     out_dirs: Sequence[str | Path] | None = None, progress: bool | None = None) -> list[TrainResult]:
    """Train one model per train config, all at once (see train_members)."""
    return train_members(corpus, model_cfg, train_cfgs, out_dirs, progress)


def resume(run_dir: str | Path, steps: int | None = None, progress: bool | None = None,
           callbacks: tuple[Callable[[dict], None], ...] = ()) -> TrainResult:
    """Continue RUN from its last checkpoint (weights, optimizer and RNG state)."""
    from .runs import load_run

    run_dir = Path(run_dir)

    def read():
        read_run_config(run_dir)
        tensors, meta = load_checkpoint(run_dir / "last.safetensors")
        if "rng.batch" not in tensors:
            raise UserError(f"{run_dir}/last.safetensors lacks rng.batch: it cannot be resumed")
        run = load_run(run_dir, checkpoint="last")
        train_cfg = run.train_cfg if steps is None else replace(run.train_cfg, steps=steps)
        if train_cfg.budget:  # a budget run resumes to the steps it had planned
            planned = run.summary().get("planned_steps") if steps is None else steps
            train_cfg = replace(train_cfg, budget=0.0, steps=planned or train_cfg.steps)
        if meta["step"] >= train_cfg.steps:
            raise UserError(f"{run_dir} already finished its {train_cfg.steps} steps; pass --steps N to train further")
        return run.model_cfg, train_cfg, run.corpus(), tensors, meta

    # [dist] in data-parallel training, rank 0 reads the run directory and sends it to the others
    model_cfg, train_cfg, corpus, tensors, meta = dist.from_rank0(read)
    note = dist.resume_note(tensors)
    if note and dist.is_writer() and progress is not False:
        print(note, file=sys.stderr)
    return train_members(corpus, model_cfg, [train_cfg], [run_dir], progress, callbacks,
                         resumed=[{"tensors": tensors, "meta": meta, "path": run_dir / "last.safetensors"}])[0]


# --------------------------------------------------------------------------------------------
# Seed ensembles: K seeds of one config, trained as K members of the loop, averaged when used


@dataclass
class EnsembleResult:
    results: list[TrainResult]  # one per seed, in order
    seeds: list[int]
    dev_loss: float  # of the ensemble: mean over dev of -log(mean over members of p(y))
    run_dir: Path | None = None
    engine: str = ""
    members: list[str] = field(default_factory=list)  # ensemble.json's members: run directories in run_dir


def member_name(seed: int) -> str:
    return f"seed-{seed}"


def train_ensemble(corpus: Corpus, model_cfg: ModelConfig, train_cfg: TrainConfig, seeds: int | Sequence[int],
                   out: str | Path | None = None, progress: bool | None = None,
                   extra_summary: dict | None = None) -> EnsembleResult:
    """Train `seeds` (a count K: train_cfg.seed, +1, ..., +K-1; or a list) of one config as
    the K members of one loop, into out/seed-<s>/ and out/ensemble.json, which eval, sample
    and score read as one averaged model."""
    seeds = [train_cfg.seed + i for i in range(seeds)] if isinstance(seeds, int) else list(seeds)
    if len(seeds) < 1 or len(set(seeds)) != len(seeds):
        raise UserError(f"an ensemble needs distinct seeds, got {seeds}")
    out = Path(out) if out is not None else None
    if out is not None:
        make_run_dir(out)
    cfgs = [replace(train_cfg, seed=s) for s in seeds]
    names = [member_name(s) for s in seeds]
    dirs = None if out is None else [out / n for n in names]
    results = train_members(corpus, model_cfg, cfgs, dirs, progress, extra_summary=extra_summary)
    # members that have a best checkpoint (all, unless interrupted before one)
    kept = [i for i, r in enumerate(results) if r.run_dir is None or (r.run_dir / "best.safetensors").is_file()]
    dev_loss = (split_nll(ensemble_predictor([results[i].model for i in kept]), corpus.encoded("dev"), None, progress)
                if kept else math.nan)
    if out is not None and kept:
        write_ensemble(out, [names[i] for i in kept], {"seeds": [seeds[i] for i in kept], "dev_loss": dev_loss})
    return EnsembleResult(results, seeds, dev_loss, out, results[0].summary["engine"], [names[i] for i in kept])
