"""Training runs from explicit configs: the members built, their run directories made and
locked, the loop (loop.Trainer) run over them.

`train_members` is the one way in: one model per train config, trained together (K = 1 a plain
run, K seeds a seed ensemble, K learning rates a sweep's population); `train_population` and
`resume` are it with a shape, and so is ensembles.train_ensemble (its members in one loop, or
one loop per process side by side). What `makemore train` adds on top (presets,
the recipe of a time budget, the count model counted inside the budget and mixed) is fit.py.

Where a run trains (device, precision, engine, threads, seeds) is decided once, by
runtime.resolve, before its engine is made. A teacher (teacher.py) is made here when a config
asks for one and the caller did not pass it in, inside the run's budget.
"""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from . import distributed as dist
from . import models, rundir, runtime
from .batches import DeviceMinibatches, Minibatches
from .config import TrainConfig
from .data import Corpus
from .engines import make_engine
from .errors import UserError
from .loop import RunLog, Trainer, TrainResult
from .models import ModelConfig
from .outputs import new_dir
from .runs import load_weights, write_run_files
from .utils import native_bfloat16

# Settings every member of one loop shares: the shape of a step (batch size), the loop itself
# (steps, evaluations) and where it runs; anything else (lr, schedule, seed, weight decay,
# betas, optimizer) may differ from member to member.
SHARED = ("steps", "batch_size", "eval_every", "eval_examples", "device", "threads", "engine", "precision",
          "teacher", "teacher_context", "budget")


# A context past the longest item + 1 is padding for every window, which no model learns from;
# block sizes up to this are still taken (a sequence model's default reads 16 on any data).
BLOCK_SLACK = 64


# A step holds each example's activations and their gradients several times over (forward,
# backward, the optimizer's and the engine's buffers): bytes per number an example's step takes.
STEP_BYTES_PER_NUMBER = 16


def step_bytes(model_cfg: ModelConfig, batch_size: int) -> int:
    """A rough upper estimate of the memory one training step takes: the minibatch times the
    numbers an example's forward pass makes (its inputs, every hidden layer, the output row; an
    adaptive softmax's head only), times STEP_BYTES_PER_NUMBER."""
    width = lambda name, default=0: int(getattr(model_cfg, name, default) or default)  # noqa: E731
    output = model_cfg.vocab_size
    if getattr(model_cfg, "softmax", "full") == "adaptive":
        output = min(output, width("softmax_head", 64) + 8)
    per_example = (width("block_size", 1) * max(width("emb_dim", 1), width("hidden", 1))
                   + width("hidden", 1) * max(1, width("layers", 1)) + output)
    return batch_size * per_example * STEP_BYTES_PER_NUMBER


def check_step_memory(corpus: Corpus, model_cfg: ModelConfig, train_cfg: TrainConfig) -> None:
    """A minibatch larger than the training split, or one whose step would not fit in the
    memory available, is one error line before anything is written (not a traceback, or the
    kernel's kill, minutes later)."""
    from .counts import available_memory

    examples = len(corpus.encoded("train"))
    if train_cfg.batch_size > examples:
        raise UserError(f"batch-size {train_cfg.batch_size:,} is more than the {examples:,} training examples; give "
                        f"--batch-size {examples:,} or less")
    need, free = step_bytes(model_cfg, train_cfg.batch_size), available_memory()
    if free is not None and train_cfg.device in ("cpu", "auto") and need > free:
        raise UserError(f"a training step of batch-size {train_cfg.batch_size:,} would take about {need / 2**30:.1f} "
                        f"GiB, more than the {free / 2**30:.1f} GiB available; give a smaller --batch-size")


def check_data(corpus: Corpus, model_cfg: ModelConfig, train_cfg: TrainConfig) -> None:
    """The configs valid, and fit for this data, before any memory is taken."""
    model_cfg.validate()
    train_cfg.validate()
    if model_cfg.vocab_size != corpus.vocab.size:
        raise UserError(f"model vocab_size {model_cfg.vocab_size} != data vocabulary {corpus.vocab.size}")
    if model_cfg.labels != len(corpus.labels):
        raise UserError(f"the model conditions on {model_cfg.labels} label(s), the data has {len(corpus.labels)}"
                        + (" (read it with --labels)" if not corpus.labels else ""))
    check_step_memory(corpus, model_cfg, train_cfg)
    useful = corpus.longest + 1
    if model_cfg.block_size > max(useful, BLOCK_SLACK):
        raise UserError(f"block-size {model_cfg.block_size:,} is more context than this data has: its longest item has "
                        f"{corpus.longest} characters, so a context of {useful} reads every item whole; give "
                        f"--block-size {useful} or less")


def make_teacher(corpus: Corpus, train_cfg: TrainConfig):
    """(Kneser-Ney model, its distributions for every training example) of a run with
    --teacher: what it distils from (teacher.py)."""
    from .labels import fit_on_dev
    from .teacher import check_fits, teacher_targets

    train = corpus.encoded("train")
    check_fits(len(train), corpus.vocab.size)  # before counting: a clear line, not a minute's wait
    ngram = fit_on_dev(corpus, train_cfg.teacher_context)
    return ngram, teacher_targets(ngram, train)


def new_run_hint(run_dir: Path) -> str:
    if rundir.is_run_dir(run_dir):
        return f"; pick another --out, or continue it with --resume {run_dir}"
    return "; pick another --out"


def train_members(corpus: Corpus, model_cfg: ModelConfig, train_cfgs: Sequence[TrainConfig],
                  out_dirs: Sequence[str | Path | None] | None = None, progress: bool | None = None,
                  callbacks: tuple[Callable[[dict], None], ...] = (), resumed: Sequence[dict] | None = None,
                  extra_summary: dict | None = None, teacher: np.ndarray | None = None) -> list[TrainResult]:
    """The training loop: one model per train config, trained together; with `out_dirs`,
    member k keeps an ordinary run directory at out_dirs[k], created (or, `resumed`, continued)
    and locked against a second writer while it trains.

    `callbacks` are called with each evaluation row ({step, train_loss, dev_loss, lr, seconds,
    member}); an exception raised by one (e.g. optuna.TrialPruned) stops training and
    propagates. `resumed` (from `resume`) holds each member's last checkpoint to continue from.
    `teacher`: the count model's distributions for the training examples, where the configs ask
    for one (made here if not given, its time taken from a budget); `extra_summary` is added to
    summary.json.
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
    extra = dict(extra_summary or {})
    budget = first.budget
    chosen = choose_device(corpus, model_cfg, train_cfgs) if dist.world() is None else None
    if chosen is not None:
        device, why, seconds = chosen
        extra["device_trial_seconds"] = seconds
        budget = max(budget - seconds, 1e-3) if budget else 0.0
        if progress is not False:
            print(f"note: {why}", file=sys.stderr)
    setup = runtime.resolve(model_cfg, train_cfgs, dist.world(), None if chosen is None else chosen[:2])
    if setup.precision == "bfloat16" and not native_bfloat16(setup.device) and dist.is_writer():
        print(f"note: this {setup.device.upper()} has no native bfloat16: --precision bfloat16 is emulated, "
              f"slower than float32", file=sys.stderr)
    if first.teacher > 0 and teacher is None:  # a budget run's teacher is made inside its budget
        started = time.perf_counter()
        _, teacher = make_teacher(corpus, first)
        extra["teacher_seconds"] = time.perf_counter() - started
        budget = max(budget - extra["teacher_seconds"], 1e-3) if budget else 0.0
    with runtime.using_threads(setup.threads), ExitStack() as stack:
        members = [models.build(model_cfg, seed=cfg.seed).to(setup.device) for cfg in train_cfgs]
        for model in members:
            model.train()
            model.observe_training_data(corpus.encoded("train"))  # a resumed one's checkpoint then overrides it
        engine = make_engine(members, train_cfgs, setup)
        dist.attach(engine)  # [dist] gradients averaged across the ranks
        starts, logs = [0] * K, []
        with dist.together():  # [dist] an error on one rank (a run directory that exists) stops all
            for k, (model, run_dir) in enumerate(zip(members, run_dirs)):
                if run_dir is not None and resumed is None:
                    # kept where it has trained (a checkpoint past step 0), so that it resumes;
                    # one that failed before its first step (out of memory) is removed
                    stack.enter_context(new_dir(run_dir, hint=new_run_hint(run_dir), keep=_has_trained))
                if run_dir is not None:
                    stack.enter_context(rundir.RunLock(run_dir))
                if resumed is not None:
                    tensors, meta = resumed[k]["tensors"], resumed[k]["meta"]
                    load_weights(model, tensors, resumed[k]["path"])
                    engine.load_member_state(k, dist.rank_state(tensors))  # [dist] this rank's random state
                    starts[k] = meta["step"]
                    if meta.get("engine") and meta["engine"] != engine.name and dist.is_writer():
                        print(f"note: resuming a {meta['engine']} run with the {engine.name} engine", file=sys.stderr)
                    logs.append(RunLog(model, run_dir, meta["best_dev"], meta["best_step"]))
                    if run_dir is not None:
                        rundir.truncate_metrics(run_dir / "metrics.csv", starts[k])
                else:
                    if run_dir is not None:
                        write_run_files(run_dir, model_cfg, train_cfgs[k], corpus.vocab, corpus.splits, corpus.source,
                                        corpus.seed, corpus.min_char_count)
                    logs.append(RunLog(model, run_dir))
        dist.broadcast_models(members)  # [dist] every rank starts from rank 0's weights
        if len(set(starts)) > 1:
            raise UserError("the members of one run must resume from the same step")
        elapsed = resumed[0]["meta"]["seconds"] if resumed is not None else 0.0
        batches = make_batches(corpus, model_cfg, train_cfgs, setup, members[0].sequence,
                               [r["tensors"]["rng.batch"] for r in resumed] if resumed is not None else None)
        if teacher is not None and setup.device != "cpu":  # the teacher's targets are read where the step runs
            teacher = torch.from_numpy(teacher).to(setup.device)
        trainer = Trainer(corpus, train_cfgs, setup, engine, logs, batches, teacher, budget, starts[0], elapsed,
                          progress, callbacks, extra)
        return trainer.run()


def make_batches(corpus: Corpus, model_cfg: ModelConfig, train_cfgs: Sequence[TrainConfig], setup, sequence: bool,
                 states=None):
    """The members' minibatches (batches.py): drawn and gathered on the GPU where the step runs
    there, else on the host a chunk of steps at a time; a sequence model trains on whole words."""
    first = train_cfgs[0]
    if setup.device != "cpu":
        return DeviceMinibatches(corpus.encoded("train"), model_cfg.block_size, [c.seed for c in train_cfgs],
                                 first.batch_size, setup.device, states, whole_words=sequence)
    return Minibatches(corpus.encoded("train"), model_cfg.block_size, [c.seed for c in train_cfgs], first.batch_size,
                       states, share=dist.batch_share(first.batch_size),  # [dist] this rank's share of each minibatch
                       whole_words=sequence)


# `--device auto` with a GPU present: the step is timed on each device for this long (after a
# few untimed steps, and the CUDA graph's capture), and the faster taken.
DEVICE_TRIAL_SECONDS = 0.5
DEVICE_TRIAL_WARMUP = 6


def choose_device(corpus: Corpus, model_cfg: ModelConfig, train_cfgs: Sequence[TrainConfig]):
    """(device, why, seconds the trial took) for `--device auto` where a CUDA GPU is present:
    a throwaway copy of the run's first member takes steps on each device as the run would
    (its engine, its minibatches), and the one with more steps per second is chosen, as a
    budget run's thread trial chooses threads. None where there is nothing to choose (another
    device asked for, or no GPU): a machine without one does exactly what it did before."""
    from .devices import cuda_available

    if train_cfgs[0].device != "auto" or not cuda_available():
        return None
    started = time.perf_counter()
    rates = {device: steps_per_second(corpus, model_cfg, train_cfgs[0], device) for device in ("cpu", "cuda")}
    device = max(rates, key=rates.get)
    other = "cpu" if device == "cuda" else "cuda"
    why = (f"--device auto took the {device}: {rates[device]:,.0f} steps/s against {rates[other]:,.0f} on the "
           f"{other}, timed on this run's model")
    return device, why, time.perf_counter() - started


def steps_per_second(corpus: Corpus, model_cfg: ModelConfig, train_cfg: TrainConfig, device: str,
                     seconds: float = DEVICE_TRIAL_SECONDS) -> float:
    """Training steps per second of a throwaway model of this config on `device`, as a run there
    takes them (its engine, CUDA graph and minibatches), timed for `seconds` after a few untimed
    steps; the teacher's targets are left out (they change what a step reads, not its work)."""
    cfg = replace(train_cfg, teacher=0.0, device=device)
    setup = runtime.resolve(model_cfg, [cfg], device=(device, ""))
    with runtime.using_threads(setup.threads):
        model = models.build(model_cfg, seed=cfg.seed).to(device)
        model.train()
        model.observe_training_data(corpus.encoded("train"))
        engine = make_engine([model], [cfg], setup)
        batches = make_batches(corpus, model_cfg, [cfg], setup, model.sequence)
        lr = np.array([cfg.lr])
        steps, t0 = 0, None
        while t0 is None or time.perf_counter() - t0 < seconds:
            losses = engine.step(*batches.at(steps, 1 << 30), lr)
            steps += 1
            if t0 is None and steps == DEVICE_TRIAL_WARMUP:
                float(losses.sum())  # the queue drained: time from here
                steps, t0 = 0, time.perf_counter()
        float(losses.sum())
        return steps / (time.perf_counter() - t0)


def train_population(corpus: Corpus, model_cfg: ModelConfig, train_cfgs: Sequence[TrainConfig],
                     out_dirs: Sequence[str | Path] | None = None, progress: bool | None = None) -> list[TrainResult]:
    """Train one model per train config, all at once (see train_members)."""
    return train_members(corpus, model_cfg, train_cfgs, out_dirs, progress)


def _has_trained(run_dir: Path) -> bool:
    """Whether a run directory holds a checkpoint past step 0 (one to resume from)."""
    return (rundir.checkpoint_step(run_dir / "last.safetensors") or 0) > 0


# Fields of summary.json a resumed run keeps from the process that started it (fit.train's extras).
RESUMED_SUMMARY = ("recipe", "count_seconds", "budget_requested", "mixes")


def resume(run_dir: str | Path, steps: int | None = None, progress: bool | None = None,
           callbacks: tuple[Callable[[dict], None], ...] = (), threads: int | None = None) -> TrainResult:
    """Continue RUN from its last checkpoint (weights, optimizer and RNG state); `steps`: to
    that many steps in all (default: the steps it was configured or planned for); `threads`:
    the machine's share it may take now (default: as configured)."""
    from .runs import load_run

    run_dir = Path(run_dir)

    def read():
        rundir.read_config(run_dir)
        tensors, meta = rundir.load_checkpoint(run_dir / "last.safetensors")
        if "rng.batch" not in tensors:
            raise UserError(f"{run_dir}/last.safetensors lacks rng.batch: it cannot be resumed")
        run = load_run(run_dir, checkpoint="last")
        summary = run.summary  # read from the run directory at each access: once here
        train_cfg = run.train_cfg if steps is None else replace(run.train_cfg, steps=steps)
        if threads is not None:
            train_cfg = replace(train_cfg, threads=threads)
        if train_cfg.budget:  # a budget run resumes to the steps it had planned
            planned = summary.get("planned_steps") if steps is None else steps
            train_cfg = replace(train_cfg, budget=0.0, steps=planned or train_cfg.steps)
        if meta["step"] >= train_cfg.steps:
            if steps is not None:
                raise UserError(f"{run_dir} is at step {meta['step']:,} already; --steps {steps:,} would end before "
                                f"it: give --steps above {meta['step']:,} to train further")
            raise UserError(f"{run_dir} already finished its {train_cfg.steps:,} steps; pass --steps N (above "
                            f"{meta['step']:,}) to train further")
        # what the run's first process decided and recorded (its recipe, its counting, that it mixes)
        extra = {key: summary[key] for key in RESUMED_SUMMARY if key in summary}
        return run.model_cfg, train_cfg, run.corpus(), tensors, meta, extra

    # [dist] in data-parallel training, rank 0 reads the run directory and sends it to the others
    model_cfg, train_cfg, corpus, tensors, meta, extra = dist.from_rank0(read)
    note = dist.resume_note(tensors)
    if note and dist.is_writer() and progress is not False:
        print(note, file=sys.stderr)
    return train_members(corpus, model_cfg, [train_cfg], [run_dir], progress, callbacks,
                         resumed=[{"tensors": tensors, "meta": meta, "path": run_dir / "last.safetensors"}],
                         extra_summary=extra)[0]
