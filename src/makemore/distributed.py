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
(`split_nll`): the dev estimates and the final figures are the same on every rank and cost 1/W.
Rank 0 alone writes the run directory (config, metrics.csv, checkpoints, summary.json with
`world_size`) and prints; its checkpoints also hold every rank's random state (rank<r>.<key>),
so that `--resume` with the same W continues exactly where the run stopped; with another W the
minibatches are still the same and only the dropout streams of the new ranks start afresh.

Faults: every collective runs under the process group's timeout (--dist-timeout, default
DEFAULT_TIMEOUT, never torch's 30 minutes). A worker that dies closes its TCP connections and
the others' next collective fails at once; one that hangs (or a machine that vanishes) is given
up on after the timeout. Either way the survivors raise WorkerLost: one line, exit status 1.

`makemore train --nproc N` (`launch`) starts N workers on this machine with torch's own elastic
launcher (torchrun's code, with --standalone's rendezvous on a free port), and turns whatever
they end with into one exit status and at most one line; under `torchrun` the same command is
a worker already (`init` reads RANK, WORLD_SIZE, ... from the environment).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import pickle
import shutil
import signal
import sys
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .errors import UserError

DEFAULT_TIMEOUT = 120.0  # seconds a collective (or joining the group) may take before we give up
LAUNCH_SHUTDOWN = 300  # seconds the launcher waits for workers to save and exit after a signal
# Set by `launch` for its workers: where each writes its error (instead of printing it), and
# the launcher's pid (a worker stops when the launcher dies).
ERRORS_ENV, LAUNCHER_ENV = "MAKEMORE_WORKER_ERRORS", "MAKEMORE_LAUNCHER_PID"
THREAD_ENVS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


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


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads(workers_here: int) -> int:
    """BLAS/OpenMP threads per worker: this machine's cores shared among its workers."""
    return max(1, usable_cores() // max(1, workers_here))


def set_threads(n: int) -> None:
    """n threads for torch's OpenMP/MKL here, and the same through the environment for anything
    started later (torchrun sets OMP_NUM_THREADS=1 when it starts several workers)."""
    torch.set_num_threads(n)
    for name in THREAD_ENVS:
        os.environ[name] = str(n)


def _first_line(e: BaseException) -> str:
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
    set_threads(threads)
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
                        f"within {timeout:g} s: {_first_line(e)}") from None
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
                         f"({_first_line(e)}){saved}") from None


@contextmanager
def worker(timeout: float | None = None, threads: int | None = None):
    """Around a worker's whole command: join the group, leave it, and settle errors so that one
    line reports them (rank 0 reports errors every rank shares; a lost worker is reported once
    per machine; under `launch` the launcher reports). Ranks other than 0 print nothing else."""
    w = init(DEFAULT_TIMEOUT if timeout is None else timeout, threads or 0)
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
        raise
    finally:
        if sys.stdout is not stdout:
            sys.stdout.close()
            sys.stdout = stdout
        shutdown()


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


def rank_seeded(train_cfgs: list) -> list:
    """The members' configs as this rank's engine sees them: seed + rank for the dropout masks
    (weights are built from the plain seed, and broadcast from rank 0 anyway)."""
    if _world is None or _world.rank == 0:
        return list(train_cfgs)
    return [replace(cfg, seed=cfg.seed + _world.rank) for cfg in train_cfgs]


def attach(engine) -> None:
    """Average the gradients across ranks between the engine's backward pass and its update."""
    if _world is not None:
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
    return (f"note: this run was saved by {saved} worker{'s' * (saved > 1)} and resumes on {size()}: the minibatches "
            f"are the same, the dropout masks of workers past the first {saved} start afresh")


def split_nll(predictor, examples, positions=None, progress: bool | None = False, desc: str = "evaluating") -> float:
    """predict.split_nll, with each rank evaluating a 1/W share of the positions: the same
    figure on every rank (an all-reduced sum), W times cheaper."""
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


# --------------------------------------------------------------------------------------------
# `makemore train --nproc N`: torch's elastic launcher, with its outcome made one line


def launches(args) -> bool:
    """Whether this `makemore train` is to start workers (--nproc/--nnodes) rather than be one."""
    wanted = (args.nproc or 1) > 1 or (args.nnodes or 1) > 1
    if wanted and "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        raise UserError("this process is already a worker (RANK and WORLD_SIZE are set, e.g. by torchrun): "
                        "drop --nproc/--nnodes and let the launcher start the workers")
    return wanted


def _quiet_torch_logs() -> None:
    """torch.distributed.elastic logs every worker it stops and prints its own error reports;
    the launcher says what happened in one line instead."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def launch(args) -> int:
    """Start args.nproc workers of `makemore train` here (and, with --nnodes M, as many on each of
    M machines meeting at --rdzv-endpoint) with torch's elastic launcher; return the run's exit
    status. Rank 0 prints the run's own output; anything that fails is reported in one line."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    nproc, nnodes = args.nproc or 1, args.nnodes or 1
    timeout = DEFAULT_TIMEOUT if args.dist_timeout is None else args.dist_timeout
    if nproc < 1 or nnodes < 1:
        raise UserError(f"--nproc and --nnodes must be at least 1, got {nproc} and {nnodes}")
    if timeout <= 0:
        raise UserError(f"--dist-timeout must be positive, got {timeout:g}")
    if nnodes > 1 and not args.rdzv_endpoint:
        raise UserError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT, the same on every machine")
    threads = args.threads or default_threads(nproc)
    tmp = Path(tempfile.mkdtemp(prefix="makemore-workers-"))
    worker_args = replace_namespace(args, nproc=None, nnodes=None, rdzv_endpoint=None)
    (tmp / "args.pickle").write_bytes(pickle.dumps(worker_args))
    env = {ERRORS_ENV: str(tmp), LAUNCHER_ENV: str(os.getpid()), **{k: str(threads) for k in THREAD_ENVS}}
    saved_env = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the workers inherit this process's environment
    endpoint = args.rdzv_endpoint or "localhost:0"  # --standalone: a free port on this machine
    if args.rdzv_endpoint:
        check_endpoint(endpoint, timeout)
    config = LaunchConfig(
        min_nodes=nnodes, max_nodes=nnodes, nproc_per_node=nproc,
        run_id=("makemore-" + uuid.uuid4().hex) if nnodes == 1 else "makemore",  # the same on every machine
        rdzv_backend="c10d", rdzv_endpoint=endpoint,
        rdzv_configs={"timeout": timeout, "join_timeout": timeout, "read_timeout": timeout},
        max_restarts=0, monitor_interval=0.1, logs_specs=DefaultLogsSpecs(log_dir=str(tmp / "logs")),
        shutdown_timeout=LAUNCH_SHUTDOWN)
    try:
        _quiet_torch_logs()
        elastic_launch(config, sys.executable)("-c", WORKER_CODE, str(tmp / "args.pickle"))
        return 0
    except ChildFailedError as e:
        return _outcome(e.failures, tmp, nproc * nnodes)
    except SignalException as e:  # Ctrl-C or kill: the workers got it too, saved and exited
        return 128 + int(e.sigval)
    except ValueError as e:  # a malformed endpoint
        raise UserError(f"bad --rdzv-endpoint {endpoint!r}: {_first_line(e)}") from None
    except Exception as e:  # the rendezvous: RendezvousError, DistNetworkError, socket errors
        if type(e).__name__ == "RendezvousTimeoutError":
            raise UserError(f"not all {nnodes} machines joined the rendezvous at {endpoint} within {timeout:g} s "
                            f"(--dist-timeout)") from None
        if type(e).__module__.startswith("torch.distributed") or isinstance(e, (RuntimeError, OSError)):
            raise UserError(f"the workers could not meet at {endpoint} ({type(e).__name__}: {_first_line(e)})") from None
        raise
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)


def check_endpoint(endpoint: str, timeout: float) -> None:
    """A rendezvous endpoint that cannot work, as one line before torch tries it (torch's C++
    store logs every retry): a malformed one, a host name that does not resolve, and, for
    another machine's endpoint, nothing answering there within `timeout` seconds."""
    import socket
    import time

    from torch.distributed.elastic.rendezvous.utils import _matches_machine_hostname, parse_rendezvous_endpoint

    try:
        host, port = parse_rendezvous_endpoint(endpoint, default_port=29400)
    except ValueError as e:
        raise UserError(f"bad --rdzv-endpoint {endpoint!r}: {_first_line(e)}") from None
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise UserError(f"the rendezvous host {host!r} of --rdzv-endpoint {endpoint} is not known here "
                        f"({getattr(e, 'strerror', None) or e})") from None
    if _matches_machine_hostname(host):
        return  # this machine hosts the rendezvous: torch listens there
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=min(5.0, timeout)).close()
            return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise UserError(f"nothing answers at --rdzv-endpoint {endpoint} after {timeout:g} s ({e.strerror or e}): "
                                f"start the command on {host} first, and check the address and port") from None
            time.sleep(1.0)


def replace_namespace(args, **changes):
    import argparse

    return argparse.Namespace(**{**vars(args), **changes})


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _outcome(failures: dict, tmp: Path, world_size: int) -> int:
    """The launcher's exit status from the failed workers; raises the one line to print."""
    reports = {}
    for r in failures:
        path = tmp / f"rank{r}.json"
        if path.is_file():
            reports[r] = json.loads(path.read_text())
    by_time = sorted(failures, key=lambda r: (failures[r].timestamp, r))
    # a worker's own error; rank 0's first: several ranks raise the same one (a bad flag)
    own = sorted((r for r in by_time if reports.get(r, {}).get("kind") == "own"), key=lambda r: r != 0)
    if own:  # a worker's own error (a missing file, a bad flag): it says it best
        r = own[0]
        raise UserError(reports[r]["message"] if r == 0 else f"worker {r}: {reports[r]['message']}")
    echo = [r for r in by_time if reports.get(r, {}).get("kind") == "echo"]
    lost = [r for r in by_time if reports.get(r, {}).get("kind") == "lost"]
    silent = [r for r in by_time if r not in reports]
    if not lost and (echo or not any(failures[r].exitcode < 0 for r in silent)):
        if echo and 0 in reports:
            raise UserError(reports[0]["message"])
        # a run that ended on its own terms (interrupted: 130/143, diverged: 1); rank 0 said so
        return failures[0].exitcode if 0 in failures else max(f.exitcode for f in failures.values())
    if silent:  # the first to go without a word: killed, or crashed (its traceback is above)
        r = silent[0]
        f = failures[r]
        how = f"was killed by {_signal_name(f.exitcode)}" if f.exitcode < 0 else f"exited with status {f.exitcode}"
        detail = reports[lost[0]]["message"] if lost else ""
        raise UserError(f"worker {r} of {world_size} (pid {f.pid}) {how}; the others stopped"
                        + (f": {detail}" if detail else ""))
    raise UserError(reports[lost[0]]["message"])


WORKER_CODE = "import sys; from makemore.distributed import worker_main; sys.exit(worker_main(sys.argv[1]))"


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


def worker_main(args_path: str) -> int:
    """A worker started by `launch`: `makemore train` with the launcher's arguments; a UserError
    is written for the launcher to report, not printed."""
    _stop_with_launcher()
    from .cli import cmd_train

    args = pickle.loads(Path(args_path).read_bytes())
    try:
        return cmd_train(args)
    except UserError as e:
        kind = "lost" if isinstance(e, WorkerLost) else "echo" if isinstance(e, Echo) else "own"
        rank = os.environ.get("RANK", "0")
        report = {"kind": kind, "message": str(e)}
        Path(os.environ[ERRORS_ENV], f"rank{rank}.json").write_text(json.dumps(report))
        return 1
    except KeyboardInterrupt:
        return 130
