"""Data-parallel training on torch.distributed: one run spread over several processes and machines.

Synchronous data parallelism, as PyTorch's DistributedDataParallel does it (Li et al., "PyTorch
Distributed: Experiences on Accelerating Data Parallel Training", VLDB 2020), over the gloo
backend (CPU tensors, TCP). W worker processes (ranks) each hold the whole model; a step is:

* every rank draws the SAME global minibatch of B positions (the generator seeded seed + 1,
  exactly as a 1-process run draws it) and gathers only its own share, B/W consecutive ones;
* the engine computes the loss as the mean over the share, and its gradients; the engine's
  grad_hook (`average_gradients`) all-reduces them and divides by W. The mean over W equal
  shares of per-share means is the mean over the global batch, so every rank applies the
  update of one process with batch B (up to float rounding). SGD's lr folded into the fused
  engine's gradients is a linear factor: still the same. AdamW's moments, fed the same
  averaged gradients, stay identical on every rank, and so do the weights (broadcast from
  rank 0 at the start);
* one small all-reduce of the members' losses and of a stop flag (`agree`): every rank sees
  the global batch's loss (a diverging member is frozen on all ranks at once) and a Ctrl-C or
  SIGTERM that reached any rank stops all of them after the same step.

Dropout: rank r draws its masks from seed + r (the fused engine's generator, the autograd
engine's torch generator), so a W-process run is reproducible for a fixed seed and W but,
when dropout > 0, differs from a 1-process run (which draws one mask for the whole batch).

Evaluation: each rank evaluates a 1/W share of the positions and the sums are all-reduced
(`mean_nll`): the dev estimates and the final figures are the same on every rank and cost 1/W.
Rank 0 alone writes the run directory (config, metrics.csv, checkpoints, summary.json with
`world_size`) and prints; its checkpoints also hold every rank's random state (rank<r>.<key>),
so that `--resume` with the same W continues exactly where the run stopped; with another W the
minibatches are still the same and only the dropout streams of the new ranks start afresh.

Faults: every collective runs under the process group's timeout (--dist-timeout, default
DEFAULT_TIMEOUT, never torch's 30 minutes). A worker that dies closes its TCP connections and
the others' next collective fails at once; one that hangs (or a machine that vanishes) is given
up on after the timeout. Either way the survivors raise WorkerLost: one line, exit status 1.

`makemore train --nproc N` starts the workers (launch.py); under `torchrun` the same command is a
worker already (`init` reads RANK, WORLD_SIZE, ... from the environment).
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import UserError
from .runtime import set_threads, usable_cores

DEFAULT_TIMEOUT = 120.0  # seconds a collective (or joining the group) may take before we give up
# Set by launch.py for its workers: where each writes its error (instead of printing it), and
# the launcher's pid (a worker stops when the launcher dies).
ERRORS_ENV, LAUNCHER_ENV = "MAKEMORE_WORKER_ERRORS", "MAKEMORE_LAUNCHER_PID"


class WorkerLost(UserError):
    """A collective failed: another worker died, hung past the timeout, or became unreachable."""


class Echo(UserError):
    """An error every rank raises because one of them hit it; rank 0 reports it, the rest stay quiet."""


@dataclass
class World:
    rank: int
    size: int
    local_rank: int
    local_size: int
    threads: int
    timeout: float
    step: int = 0  # updated at each step: for error messages
    saved_step: int | None = None  # the last checkpoint's step
    run_dir: Path | None = None


_world: World | None = None


def world() -> World | None:
    """The process group this process trains in, or None for a plain 1-process run."""
    return _world


def size() -> int:
    return 1 if _world is None else _world.size


def is_writer() -> bool:
    """Whether this process writes files and prints: rank 0, or a plain run."""
    return _world is None or _world.rank == 0


# --------------------------------------------------------------------------------------------
# Joining and leaving the process group


def default_threads(workers_here: int) -> int:
    """BLAS/OpenMP threads per worker: this machine's cores shared among its workers."""
    return max(1, usable_cores() // max(1, workers_here))


def first_line(e: BaseException) -> str:
    """The gist of an exception's message: its first line, less gloo's source location and advice."""
    text = str(e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    if line.startswith("[") and "] " in line:  # "[/.../gloo/transport/tcp/pair.cc:537] Read error ..."
        line = line.split("] ", 1)[1]
    return line.split(". This is typically")[0]


def init(timeout: float = DEFAULT_TIMEOUT, threads: int = 0) -> World | None:
    """Join the process group that the environment describes (torchrun and `launch` set RANK,
    WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT); None when there is no
    such group, or a group of one. `threads` 0: default_threads."""
    global _world
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    import torch.distributed as dist

    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    threads = threads or default_threads(local_size)
    set_threads(threads, environment=True)
    if world_size == 1:
        return None
    if timeout <= 0:
        raise UserError(f"--dist-timeout must be positive, got {timeout:g}")
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    try:
        dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout))
    except (RuntimeError, ValueError, OSError) as e:  # torch's DistNetworkError/DistStoreError are RuntimeErrors
        raise UserError(f"worker {rank} of {world_size} could not join the process group at {where} "
                        f"within {timeout:g} s: {first_line(e)}") from None
    _world = World(rank, world_size, int(os.environ.get("LOCAL_RANK", rank)), local_size, threads, timeout)
    return _world


def shutdown() -> None:
    global _world
    if _world is not None:
        import torch.distributed as dist

        _world = None
        if dist.is_initialized():
            dist.destroy_process_group()


def _collective(what: str, fn, *args, **kwargs):
    """Run one collective; its failure (a lost or hung worker) becomes WorkerLost."""
    try:
        return fn(*args, **kwargs)
    except RuntimeError as e:
        w = _world
        saved = ""
        if w is not None and w.run_dir is not None and w.saved_step is not None:
            saved = (f"; the last checkpoint (step {w.saved_step}) is in {w.run_dir}: continue with "
                     f"makemore train --resume {w.run_dir} on as many workers")
        raise WorkerLost(f"lost contact with another worker in {what} at step {w.step if w else '?'} "
                         f"({first_line(e)}){saved}") from None


@contextmanager
def worker(timeout: float | None = None, threads: int | None = None):
    """Around a worker's whole command: join the group, leave it, and settle errors so that one
    line reports them (rank 0 reports errors every rank shares; a lost worker is reported once
    per machine; a worker started by launch.py writes its error for the launcher to report).
    Ranks other than 0 print nothing else."""
    if os.environ.get(LAUNCHER_ENV):
        _stop_with_launcher()
    try:
        w = init(DEFAULT_TIMEOUT if timeout is None else timeout, threads or 0)
    except UserError as e:
        _report_or_raise(e)
    if w is None:
        yield None
        return
    stdout = sys.stdout
    if w.rank != 0:
        sys.stdout = open(os.devnull, "w")
    try:
        yield w
        # nobody leaves before rank 0 has written and printed everything (a launcher stops the
        # others as soon as one worker exits with a non-zero status: 130 after Ctrl-C, say)
        _collective("the final barrier", _barrier)
    except UserError as e:
        if os.environ.get(ERRORS_ENV) is None and (
                (isinstance(e, Echo) and w.rank != 0) or (isinstance(e, WorkerLost) and w.local_rank != 0)):
            raise SystemExit(1) from None
        _report_or_raise(e)
    except KeyboardInterrupt:
        if os.environ.get(ERRORS_ENV) is None:
            raise
        raise SystemExit(130) from None
    finally:
        if sys.stdout is not stdout:
            sys.stdout.close()
            sys.stdout = stdout
        shutdown()


def _report_or_raise(e: UserError):
    """A worker started by launch.py writes its error for the launcher, which prints one line for
    all of them, and exits 1; any other process raises it (the CLI prints it)."""
    folder = os.environ.get(ERRORS_ENV)
    if folder is None:
        raise e
    kind = "lost" if isinstance(e, WorkerLost) else "echo" if isinstance(e, Echo) else "own"
    Path(folder, f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps({"kind": kind, "message": str(e)}))
    raise SystemExit(1) from None


def _stop_with_launcher() -> None:
    """Ask the kernel for a SIGTERM when the launcher dies (the workers run in sessions of their
    own, so nothing else would stop them): they then stop together and save, as after kill."""
    pid = int(os.environ.get(LAUNCHER_ENV, "0"))
    if not pid or not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    if os.getppid() != pid:  # it died before we asked
        os.kill(os.getpid(), signal.SIGTERM)


def _barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


@contextmanager
def together():
    """Run a block on every rank; a UserError raised in it on any rank is raised on every rank
    (as Echo where it did not happen), so that all stop, and stop at the same place."""
    if _world is None:
        yield
        return
    import torch.distributed as dist

    error = None
    try:
        yield
    except UserError as e:
        error = e
    messages = [None] * _world.size
    _collective("checking the setup", dist.all_gather_object, messages, None if error is None else str(error))
    failed = [(r, m) for r, m in enumerate(messages) if m is not None]
    if not failed:
        return
    if error is not None and failed[0][0] == _world.rank:
        raise error
    r, message = failed[0]
    raise Echo(message if r == 0 else f"worker {r}: {message}")


def from_rank0(fn):
    """fn() computed on rank 0 alone and sent to every rank (reading a run directory that only
    rank 0's machine may have); a UserError it raises is raised on every rank."""
    if _world is None:
        return fn()
    import torch.distributed as dist

    box = [None]
    with together():
        if _world.rank == 0:
            box[0] = fn()
    _collective("sending rank 0's data", dist.broadcast_object_list, box, src=0)
    return box[0]


# --------------------------------------------------------------------------------------------
# What the training loop calls (training.py, at the places marked [dist])


def check(train_cfgs, progress: bool | None) -> None:
    """Refuse what data parallelism cannot do here, and say how the run is spread."""
    if _world is None:
        return
    B, W = train_cfgs[0].batch_size, _world.size
    if train_cfgs[0].budget:
        # each rank would time its own steps and plan its own number of them: they must agree
        raise (UserError if _world.rank == 0 else Echo)(
            "--budget is not supported with several workers yet; give --steps")
    if B % W:
        raise (UserError if _world.rank == 0 else Echo)(
            f"the batch size ({B}) must be a multiple of the number of workers ({W}): each takes B/W examples")
    if _world.rank == 0 and progress is not False:
        print(f"data parallel: {W} workers (gloo), {_world.threads} thread{'s' * (_world.threads > 1)} each; "
              f"global batch {B} = {W} x {B // W}", file=sys.stderr, flush=True)


def progress(enabled: bool | None) -> bool | None:
    return enabled if is_writer() else False


def writer_dirs(run_dirs: list) -> list:
    """The run directories this rank writes: all of them on rank 0, none elsewhere."""
    if _world is None:
        return run_dirs
    _world.run_dir = next((d for d in run_dirs if d is not None), None)
    return run_dirs if _world.rank == 0 else [None] * len(run_dirs)


def attach(engine) -> None:
    """Average the gradients across ranks between the engine's backward pass and its update."""
    if _world is not None:
        if any(m.sparse_parameters for m in engine.models):
            raise UserError("training on several processes does not average hashed context features' sparse "
                            "gradients: train with --hash-orders 0, or on one process")
        engine.grad_hook = average_gradients


def average_gradients(grads) -> None:
    """The engines' grad_hook: each rank's gradients become their mean over the ranks, in place.
    The fused engine passes its (K, P) flat buffer (one all-reduce); the autograd engine a list
    of p.grad tensors (flattened into one buffer, all-reduced, copied back)."""
    import torch.distributed as dist
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    if isinstance(grads, np.ndarray):
        flat = torch.from_numpy(grads)  # shares the engine's memory
        flat.div_(_world.size)
        _collective("the gradient all-reduce", dist.all_reduce, flat)
        return
    flat = _flatten_dense_tensors(grads)
    flat.div_(_world.size)
    _collective("the gradient all-reduce", dist.all_reduce, flat)
    for g, averaged in zip(grads, _unflatten_dense_tensors(flat, grads)):
        g.copy_(averaged)


def broadcast_models(models) -> None:
    """Every rank starts from rank 0's weights (and buffers)."""
    if _world is None:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for model in models:
            for t in model.state_dict().values():
                _collective("broadcasting the weights", dist.broadcast, t, src=0)


def batch_share(B: int) -> slice:
    """This rank's examples of a global minibatch of B: the r-th run of B/W."""
    if _world is None:
        return slice(None)
    b = B // _world.size
    return slice(_world.rank * b, (_world.rank + 1) * b)


def agree(losses: np.ndarray, stop) -> np.ndarray:
    """After each step: the global minibatch's losses (the mean of the ranks' shares' means), and
    stop.received set on every rank if a signal reached any (StopSignals(deferred=True) only
    records it in stop.asked), so that all ranks stop after the same step."""
    if _world is None:
        return losses
    import torch.distributed as dist

    K = len(losses)
    t = torch.zeros(K + 2, dtype=torch.float64)
    t[:K] = torch.from_numpy(np.asarray(losses, dtype=np.float64))
    t[K] = stop.asked == "SIGINT"
    t[K + 1] = stop.asked == "SIGTERM"
    _collective("the loss all-reduce", dist.all_reduce, t)
    _world.step += 1
    if stop.received is None and (t[K] > 0 or t[K + 1] > 0):
        stop.received = "SIGTERM" if t[K + 1] > 0 else "SIGINT"
    return (t[:K] / _world.size).numpy()


def start_step(step: int) -> None:
    if _world is not None:
        _world.step = step


def gather_rank_state(state: dict, step: int) -> dict:
    """A member's state to checkpoint: the optimizer's and the minibatch generator's (identical on
    every rank) and every rank's own random state (dropout), rank 0's under the plain names and
    rank r's as rank<r>.<name>."""
    if _world is None:
        return state
    import torch.distributed as dist

    own = {k: v for k, v in state.items() if not _shared(k)}
    everyone = [None] * _world.size
    _collective("gathering the random states", dist.all_gather_object, everyone, own)
    out = dict(state)
    for r, theirs in enumerate(everyone[1:], start=1):
        out.update({f"rank{r}.{k}": v for k, v in theirs.items()})
    out["dist.world_size"] = torch.tensor(_world.size)
    _world.saved_step = step
    return out


def rank_state(tensors: dict) -> dict:
    """This rank's part of a checkpoint gather_rank_state wrote (the plain names on rank 0)."""
    if _world is None or _world.rank == 0:
        return tensors
    prefix = f"rank{_world.rank}."
    own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    return {**{k: v for k, v in tensors.items() if _shared(k)}, **own}


def _shared(name: str) -> bool:
    """State that is the same on every rank: the optimizer's, and the minibatch generator."""
    return name.startswith("optim.") or name == "rng.batch"


def resume_note(tensors: dict) -> str | None:
    """A note when a run resumes on another number of workers than it was saved with."""
    saved = int(tensors["dist.world_size"]) if "dist.world_size" in tensors else 1
    if saved == size():
        return None
    dropout = (f"the dropout masks of workers past the first {saved} start afresh" if size() > saved else
               f"the dropout masks (where the model has dropout) are drawn by {size()} worker{'s' * (size() > 1)} "
               f"instead of {saved}, so they differ from a run that stayed on {saved}")
    return (f"note: this run was saved by {saved} worker{'s' * (saved > 1)} and resumes on {size()}: the minibatches "
            f"are the same; {dropout}")


def mean_nll(predictor, examples, positions=None, progress: bool | None = False, desc: str = "evaluating") -> float:
    """predict.split_nll as a data-parallel run computes it: each rank evaluates a 1/W share of
    the positions and the sums are all-reduced, the same figure on every rank, W times cheaper
    (a plain run: predict.split_nll itself)."""
    from . import predict

    if _world is None:
        return predict.split_nll(predictor, examples, positions, progress, desc)
    import torch.distributed as dist

    n = len(examples) if positions is None else len(positions)
    bounds = np.linspace(0, n, _world.size + 1).astype(np.int64)
    lo, hi = bounds[_world.rank], bounds[_world.rank + 1]
    share = np.arange(lo, hi, dtype=np.int64) if positions is None else np.asarray(positions)[lo:hi]
    logp = predict.target_log_probs(predictor, examples, share, progress if _world.rank == 0 else False, desc)
    t = torch.tensor([-logp.sum().item(), float(len(share))], dtype=torch.float64)
    _collective("the evaluation all-reduce", dist.all_reduce, t)
    return t[0].item() / max(1.0, t[1].item())


def resume_flags() -> str:
    """What to add to `makemore train --resume RUN` to continue on the same workers."""
    if _world is None:
        return ""
    if _world.local_size == _world.size:
        return f" --nproc {_world.size}"
    return f" (started as this run was: {_world.size} workers)"


def summary() -> dict:
    """What summary.json records of the processes a run trained on."""
    return {"world_size": size()}
