"""Population training: K MLPs of one shape trained at once, with batched matrix products.

A learning-rate sweep or a seed ensemble trains K models that differ only in numbers (learning
rate and schedule, seed, weight decay, Adam's betas), never in shape. A step of one model at
the lecture's size is ~35 NumPy calls on arrays of a few thousand numbers (see fused.py), and
a training loop adds minibatch draws and bookkeeping around it. Stacking the K models' arrays
along a leading member axis makes those calls K times larger instead of K times more
numerous, and each matrix product a batched one, (K, B, n) @ (K, n, m). What it saves is that
fixed cost, not arithmetic: the products already run near the core's peak in a solo run, so
K=16 lecture-size runs take about 1.6-1.8x less time together than one after another
(benchmarks/bench.py, item 4; about 2x for the smaller tiny2d preset, whose fixed cost
weighs more).

The step is fused.py's own `_forward_backward`, run on stacked buffers:

* parameters (and gradients) are one (K, P') array, row k holding member k's flat buffer in
  fused's layout (W_l followed by b_l, so [dW; db] is still one product), P' = P rounded up to
  a multiple of emb_dim so that the rows of all K embedding tables C form one (K*P'/E, E)
  table: member k's character c is row k*P'/E + c, and one take() gathers every member's
  embeddings, one np.add.at scatters every member's dC;
* each member's MLP (train.TrainResult.model) works on views of its row during training, so
  dev evaluation and checkpoints use the model as train() does;
* SGD folds each member's lr into its dlogits, AdamW takes per-member (K, 1) coefficients.

Member k is exactly the run train() makes with train_cfgs[k] on the fused engine: the same
initial weights (MLP(model_cfg, seed)), the same minibatches (torch.randint from a generator
seeded seed + 1), the same dropout masks (NumPy's generator seeded `seed`, drawn as
FusedEngine draws them), the same update; results agree with a solo run to float rounding
(tests/test_population.py). Each member is written as an ordinary run directory.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import fused
from .config import ModelConfig, TrainConfig
from .data import Corpus
from .errors import UserError
from .model import MLP, decays, mean_nll, param_shapes
from .runs import write_ensemble, write_run_files
from .train import (DIVERGED_LOSS, RunLog, TrainResult, _Progress, check_data, diverged_message, lr_at,
                    resolve_device, train)

# Settings every member must share: the shape of the stacked arrays (batch size), the loop
# (steps, evaluations) and the update rule; anything else (lr, schedule, seed, weight decay,
# betas) may differ from member to member.
SHARED = ("steps", "batch_size", "optimizer", "eval_every", "device", "threads")
CHUNK = 256  # steps of minibatch indices drawn at once per member


def population_reason(model_cfg: ModelConfig, train_cfgs: Sequence[TrainConfig]) -> str | None:
    """None if these runs can train as one population, else a short reason."""
    if not train_cfgs:
        return "no runs"
    for cfg in train_cfgs:
        if cfg.engine == "autograd":
            return "engine autograd: a population computes the fused engine's step"
        reason = fused.unsupported_reason(model_cfg, cfg)
        if reason is not None:
            return reason
    for name in SHARED:
        values = {getattr(cfg, name) for cfg in train_cfgs}
        if len(values) > 1:
            return f"their {name.replace('_', '-')} differs ({', '.join(sorted(map(str, values)))})"
    if len(train_cfgs) > 1 and not fused.small_products(model_cfg, train_cfgs[0].batch_size):
        # Batching pays where a step is mostly overhead. Past OpenBLAS's one-thread size a solo
        # run already keeps every core busy in torch.mm, while the population's per-member
        # products run on one thread: the `default` preset trained ~5x slower as 3 members.
        return "the model is large enough that solo runs use every core better"
    return None


def population_key(model_cfg: ModelConfig, train_cfg: TrainConfig) -> tuple:
    """Runs with equal keys can share a population (if population_reason agrees)."""
    return (tuple(sorted(vars(model_cfg).items())), *(getattr(train_cfg, name) for name in SHARED))


class PopulationEngine:
    """FusedEngine's step for K models at once: SGD or AdamW, each member with its own lr,
    weight decay, betas and dropout generator.

    The models' parameters are re-pointed at rows of the engine's buffer (an MLP sees its own
    weights change as the engine steps); they must not be replaced while the engine lives.
    """

    name = "population"

    def __init__(self, models: Sequence[MLP], train_cfgs: Sequence[TrainConfig]):
        if len(models) != len(train_cfgs) or not models:
            raise ValueError(f"need one train config per model, got {len(models)} models and {len(train_cfgs)} configs")
        cfg = models[0].cfg
        reason = population_reason(cfg, train_cfgs)
        if reason is not None:
            raise ValueError(f"PopulationEngine does not support these runs: {reason}")
        if any(m.cfg != cfg for m in models):
            raise ValueError("the members of a population must share one model config")
        dtypes = {p.dtype for m in models for p in m.parameters()}
        if len(dtypes) != 1 or dtypes & {torch.float32, torch.float64} != dtypes:
            raise ValueError(f"PopulationEngine needs float32 or float64 parameters of one dtype, got {dtypes}")
        K, E = len(models), cfg.emb_dim
        self.K, self.cfg = K, cfg
        self.dtype = torch.empty(0, dtype=dtypes.pop()).numpy().dtype
        self.names = list(param_shapes(cfg))
        # rows of P' = P rounded up to a multiple of E entries; the padding stays 0 (its
        # gradient is never written) and so does its update
        self.flat, self.arrays = fused._flat_buffer(cfg, self.dtype, members=K, align=E)
        with torch.no_grad():
            for k, model in enumerate(models):
                for n, p in model.named_parameters():
                    self.arrays[n][k] = p.detach().cpu().numpy()
                    p.data = torch.from_numpy(self.arrays[n][k])  # the model now reads row k
        self.params = fused._Params(self.arrays, cfg)
        self.rows = self.flat.shape[1] // E  # rows of the C table per member
        self.params.C = self.flat.reshape(-1, E)  # every member's C, one table (see the module doc)
        self.row_offset = (np.arange(K, dtype=np.intp) * self.rows).reshape(K, 1, 1)
        self.grad_flat, grad_arrays = fused._flat_buffer(cfg, self.dtype, members=K, align=E)
        self.grads = fused._Params(grad_arrays, cfg, self.grad_flat)
        self.optimizer = train_cfgs[0].optimizer
        self.weight_decay = np.array([c.weight_decay for c in train_cfgs])
        self.decayed = [self.arrays[n] for n in self.names if decays(n)]
        if self.optimizer == "adamw":
            self.beta1 = np.array([[float(c.betas[0])] for c in train_cfgs])  # (K, 1)
            self.beta2 = np.array([[float(c.betas[1])] for c in train_cfgs])
            self.m_flat, self.m = fused._flat_buffer(cfg, self.dtype, members=K, align=E)
            self.v_flat, self.v = fused._flat_buffer(cfg, self.dtype, members=K, align=E)
            self.step_flat = np.zeros_like(self.flat)
            self.t = 0
        self.dropout = float(cfg.dropout)
        self.drop_below, self.keep_scale = fused.dropout_threshold(self.dropout)
        self.rngs = [np.random.default_rng(c.seed) for c in train_cfgs]  # as each FusedEngine's
        self._workspaces: dict[int, fused._Workspace] = {}

    def _workspace(self, B: int) -> fused._Workspace:
        ws = self._workspaces.get(B)
        if ws is None:
            K, H = self.K, self.cfg.hidden
            ws = fused._Workspace(self.cfg, B, self.dtype, dropout=self.dropout > 0, members=K,
                                  table_rows=K * self.rows)
            # np.matmul on (K, B, n) stacks: one OpenBLAS product per member, on this thread.
            # Measured at the lecture's size, K=16, 2 cores: x @ W1 takes 70 us this way, 81 us
            # by torch.matmul and 103 us by torch.bmm (MKL, one or two threads alike), and a whole
            # step 0.68 ms against 2.8 ms with torch.matmul(out=...) into these column-major
            # buffers, which it fills through a copy.
            ws.matmul = np.matmul
            ws.table_idx = np.empty((K, B, self.cfg.block_size), np.intp)
            ws.masks = [None] * self.cfg.layers
            if self.dropout > 0:  # column-major per member, like the layers' buffers
                ws.keep = fused._column_major((K, B, H), np.bool_)
                ws.masks = [fused._column_major((K, B, H), self.dtype) for _ in range(self.cfg.layers)]
                ws.member_masks = [[mask[k] for mask in ws.masks] for k in range(K)]
            self._workspaces[B] = ws
        return ws

    def step(self, idx: np.ndarray, y: np.ndarray, lrs: np.ndarray) -> np.ndarray:
        """One minibatch update of every member; row k of idx (K, B, block_size), y (K, B) and
        lrs (K,) is member k's. Returns each member's minibatch loss before the update."""
        K, B = y.shape
        ws = self._workspace(B)
        np.add(idx, self.row_offset, out=ws.table_idx)  # member k's characters are its rows of C
        if self.dropout > 0:
            for rng, keep, masks in zip(self.rngs, ws.keep, ws.member_masks):
                fused.draw_masks(rng, self.drop_below, self.keep_scale, keep, masks)
        lrs = np.asarray(lrs, dtype=np.float64)
        with np.errstate(all="ignore"):  # see fused._forward_backward
            if self.optimizer == "sgd":
                # as FusedEngine: every gradient comes out multiplied by its member's lr
                scale = lrs.astype(self.dtype).reshape(K, 1)
                fused._forward_backward(self.params, self.grads, ws, ws.table_idx, y, ws.masks, scale)
                self._decay(lrs)
                self.flat -= self.grad_flat
            else:
                fused._forward_backward(self.params, self.grads, ws, ws.table_idx, y, ws.masks, 1.0)
                self.t += 1
                self._decay(lrs)
                fused.adamw_step(self.grad_flat, self.m_flat, self.v_flat, self.step_flat, self.beta1,
                                 self.beta2, self.t, lrs.reshape(K, 1))
                self.flat -= self.step_flat
        return np.add.reduce(ws.nll, axis=1).astype(np.float64) / B

    def _decay(self, lrs: np.ndarray) -> None:
        """Decoupled weight decay, p <- p * (1 - lr*wd), on C and the W's of each member."""
        if self.weight_decay.any():
            shrink = (1.0 - lrs * self.weight_decay).astype(self.dtype).reshape(self.K, 1, 1)
            for p in self.decayed:
                p *= shrink

    def freeze(self, k: int, weights: dict[str, torch.Tensor]) -> None:
        """Put `weights` in member k and keep them there (the caller steps it with lr 0): what
        a diverged member gets, so that its inf/NaN do not stay in the buffers."""
        for n in self.names:
            self.arrays[n][k] = weights[n].detach().cpu().numpy()
        if self.optimizer == "adamw":
            self.m_flat[k] = 0.0  # with lr 0 the update is 0 * finite = 0
            self.v_flat[k] = 0.0

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's optimizer state as FusedEngine.state_dict names it, so that a member
        resumes as a solo run (`makemore train --resume RUN/seed-1`)."""
        adamw = None
        if self.optimizer == "adamw":
            adamw = ({n: self.m[n][k] for n in self.names}, {n: self.v[n][k] for n in self.names}, self.t)
        return fused.optimizer_state(self.names, adamw, self.rngs[k] if self.dropout > 0 else None)


class _Minibatches:
    """Each member's minibatch indices, drawn as train() draws them: torch.randint(0, n, (B,))
    from a generator seeded seed + 1, once per step. The CPU generator draws serially, so one
    draw of c*B indices equals c draws of B; we draw CHUNK steps at a time."""

    def __init__(self, seeds: Sequence[int], n: int, B: int):
        self.generators = [torch.Generator().manual_seed(s + 1) for s in seeds]
        self.n, self.B = n, B
        self.chunk, self.first, self.states = np.empty((len(seeds), 0, B), np.intp), 0, []

    def at(self, step: int, last: int) -> np.ndarray:
        """(K, B) indices of update `step` (0-based); chunks never reach past update `last`."""
        i = step - self.first
        if i >= self.chunk.shape[1]:
            self.first, i = step, 0
            c = min(CHUNK, last - step + 1)
            self.states = [g.get_state() for g in self.generators]
            self.chunk = torch.stack([torch.randint(0, self.n, (c * self.B,), generator=g)
                                      for g in self.generators]).numpy().reshape(len(self.generators), c, self.B)
        return self.chunk[:, i]

    def state(self, k: int, steps: int) -> torch.Tensor:
        """Member k's generator state after `steps` updates, as train() saves it (rng.batch)."""
        used = steps - self.first
        if used >= self.chunk.shape[1]:
            return self.generators[k].get_state()
        g = torch.Generator()
        g.set_state(self.states[k])
        if used > 0:
            torch.randint(0, self.n, (used * self.B,), generator=g)
        return g.get_state()


def train_population(corpus: Corpus, model_cfg: ModelConfig, train_cfgs: Sequence[TrainConfig],
                     out_dirs: Sequence[str | Path] | None = None, progress: bool | None = None) -> list[TrainResult]:
    """Train one MLP per train config, all at once; with `out_dirs`, member k keeps an ordinary
    run directory at out_dirs[k] (as train(out=...) would write it).

    Each member evaluates on dev, keeps its best checkpoint and stops on divergence as a solo
    run does. Summaries say engine "population"; `seconds` is the population's time.
    """
    train_cfgs = list(train_cfgs)
    K = len(train_cfgs)
    if K == 0:
        raise UserError("a population needs at least one run")
    for cfg in train_cfgs:
        check_data(corpus, model_cfg, cfg)
    reason = population_reason(model_cfg, train_cfgs)
    if reason is not None:
        raise UserError(f"these runs cannot train as one population: {reason}")
    run_dirs = [None] * K if out_dirs is None else [Path(d) for d in out_dirs]
    if len(run_dirs) != K or (out_dirs is not None and len(set(run_dirs)) != K):
        raise UserError(f"need {K} distinct run directories, one per member, got {len(run_dirs)}")
    for run_dir in run_dirs:
        if run_dir is not None and run_dir.exists():
            raise UserError(f"{run_dir} already exists")
    first = train_cfgs[0]
    device = resolve_device(first.device)
    if first.threads > 0:
        torch.set_num_threads(first.threads)
    Xtr, Ytr = corpus.examples("train", model_cfg.block_size)
    Xdev, Ydev = corpus.examples("dev", model_cfg.block_size)
    Xtr_np, Ytr_np = Xtr.numpy(), Ytr.numpy()

    models = [MLP(model_cfg, seed=cfg.seed) for cfg in train_cfgs]
    engine = PopulationEngine(models, train_cfgs)
    for run_dir, cfg in zip(run_dirs, train_cfgs):
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=False)
            write_run_files(run_dir, model_cfg, cfg, corpus.vocab, corpus.splits, corpus.source, corpus.seed)
    logs = [RunLog(model, run_dir) for model, run_dir in zip(models, run_dirs)]
    batches = _Minibatches([cfg.seed for cfg in train_cfgs], Xtr.shape[0], first.batch_size)
    # train() seeds torch's global generator (autograd's dropout) and saves it with the run
    torch_states = [torch.Generator().manual_seed(cfg.seed).get_state() for cfg in train_cfgs]

    steps, eval_every = first.steps, first.eval_every
    log_every = max(1, min(eval_every, steps // 2000))
    bar = _Progress(steps, 0, progress)
    active = np.ones(K, dtype=bool)  # not diverged
    status, messages, last_step = ["completed"] * K, [""] * K, [0] * K
    interval_loss, interval_n, bar_pending = np.zeros(K), 0, 0
    lrs = np.array([lr_at(cfg, 0) for cfg in train_cfgs])
    t0 = time.perf_counter()

    def seconds() -> float:
        return time.perf_counter() - t0

    def save_last(k: int, step: int) -> None:
        state = {**engine.member_state(k), "rng.batch": batches.state(k, step), "rng.torch": torch_states[k]}
        logs[k].save_last(step, state, seconds(), engine.name)

    def record(step: int, is_eval: bool) -> None:
        nonlocal interval_n
        rows = {}
        for k in np.flatnonzero(active):
            dev = mean_nll(models[k], Xdev, Ydev) if is_eval else None
            train_loss = float(interval_loss[k]) / interval_n if interval_n else None
            rows[k] = logs[k].record(step, train_loss, dev, float(lrs[k]), seconds())
            if is_eval and run_dirs[k] is not None:
                save_last(k, step)
        interval_loss[:], interval_n = 0.0, 0
        if is_eval and rows:
            best = min(rows, key=lambda k: rows[k]["dev_loss"])
            name = run_dirs[best].name if run_dirs[best] is not None else f"#{best}"
            bar.log(rows[best], steps, step / max(1e-9, seconds()), label=f"best of {len(rows)} ({name}): ")

    step = 0
    try:
        record(0, True)
        while step < steps and active.any():
            lrs = np.array([lr_at(cfg, step) if on else 0.0 for cfg, on in zip(train_cfgs, active)])
            ix = batches.at(step, steps - 1)
            losses = engine.step(Xtr_np[ix], Ytr_np[ix], lrs)
            step += 1
            bad = active & ~(losses <= DIVERGED_LOSS)  # inf, NaN or blown up
            for k in np.flatnonzero(bad):
                status[k], last_step[k] = "diverged", step
                messages[k] = diverged_message(step, float(losses[k]), float(lrs[k]), logs[k])
                logs[k].flush()
                engine.freeze(k, logs[k].best_weights)
                active[k] = False
            interval_loss += losses
            interval_n += 1
            bar_pending += 1
            if step % log_every == 0 or step == steps or step % eval_every == 0:
                if bar.bar is not None and active.any():  # the bar shows the members' mean loss
                    bar.update(bar_pending, float(losses[active].mean()), float(lrs[active].max()))
                bar_pending = 0
                record(step, step % eval_every == 0 or step == steps)
    except KeyboardInterrupt:
        for k in np.flatnonzero(active):
            status[k] = "interrupted"
            messages[k] = f"interrupted at step {step}; progress saved"
            if run_dirs[k] is not None:
                save_last(k, step)
                messages[k] += f". Continue with: makemore train --resume {run_dirs[k]}"
    finally:
        bar.close()
    run_seconds = seconds()
    results = []
    for k, (model, log) in enumerate(zip(models, logs)):
        done = step if active[k] or status[k] == "interrupted" else last_step[k]
        summary = log.finish((Xtr, Ytr, Xdev, Ydev), done, run_seconds, done / max(run_seconds, 1e-9),
                             engine.name, device, status[k], population=K)
        with torch.no_grad():
            for p in model.parameters():
                p.data = p.data.clone()  # its own storage, free of the population's buffer
        results.append(TrainResult(model, status[k], summary, run_dirs[k], messages[k], log.history))
    return results


# --------------------------------------------------------------------------------------------
# Seed ensembles: K seeds of one config, trained as one population, averaged when used


@dataclass
class EnsembleResult:
    results: list[TrainResult]  # one per seed, in order
    seeds: list[int]
    dev_loss: float  # of the ensemble: mean over dev of -log(mean over members of p(y))
    run_dir: Path | None = None
    population: bool = True  # False: the seeds could not share a population and trained in turn
    members: list[str] = field(default_factory=list)  # ensemble.json's members: run directories in run_dir


def member_name(seed: int) -> str:
    return f"seed-{seed}"


def train_ensemble(corpus: Corpus, model_cfg: ModelConfig, train_cfg: TrainConfig, seeds: int | Sequence[int],
                   out: str | Path | None = None, progress: bool | None = None) -> EnsembleResult:
    """Train `seeds` (a count K: train_cfg.seed, +1, ..., +K-1; or a list) of one config, as
    one population when it can (else one run after another), into out/seed-<s>/ and
    out/ensemble.json, which eval, sample and score read as one averaged model."""
    from dataclasses import replace

    from .sample import ensemble_predictor, predictor_nll

    seeds = [train_cfg.seed + i for i in range(seeds)] if isinstance(seeds, int) else list(seeds)
    if len(seeds) < 1 or len(set(seeds)) != len(seeds):
        raise UserError(f"an ensemble needs distinct seeds, got {seeds}")
    out = Path(out) if out is not None else None
    if out is not None and out.exists():
        raise UserError(f"{out} already exists")
    cfgs = [replace(train_cfg, seed=s) for s in seeds]
    names = [member_name(s) for s in seeds]
    dirs = None if out is None else [out / n for n in names]
    together = population_reason(model_cfg, cfgs) is None
    if together:
        results = train_population(corpus, model_cfg, cfgs, dirs, progress=progress)
    else:
        print(f"note: the {len(seeds)} seeds train one after another ({population_reason(model_cfg, cfgs)})",
              file=sys.stderr)
        results = []
        for i, cfg in enumerate(cfgs):
            results.append(train(corpus, model_cfg, cfg, out=None if dirs is None else dirs[i], progress=progress))
            if results[-1].status == "interrupted":
                break
    # members that have a best checkpoint (all, unless interrupted before one)
    kept = [i for i, r in enumerate(results) if r.run_dir is None or (r.run_dir / "best.safetensors").is_file()]
    Xdev, Ydev = corpus.examples("dev", model_cfg.block_size)
    dev_loss = (predictor_nll(ensemble_predictor([results[i].model for i in kept]), Xdev, Ydev)
                if kept else math.nan)
    if out is not None and kept:
        write_ensemble(out, [names[i] for i in kept], {"seeds": [seeds[i] for i in kept], "dev_loss": dev_loss})
    return EnsembleResult(results, seeds, dev_loss, out, together, [names[i] for i in kept])
