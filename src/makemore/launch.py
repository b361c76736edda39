"""`makemore train --nproc N`: start the workers of a data-parallel run, and turn whatever they
end with into one exit status and at most one line.

The workers are started by torch's own elastic launcher (torchrun's code, with --standalone's
rendezvous on a free port; with --nnodes M, as many on each of M machines meeting at
--rdzv-endpoint). Each runs this same `makemore train` command without the launcher's flags, as
torchrun would run it: a worker joins its process group (distributed.py) and writes any error
it hits to a file for the launcher to report (distributed.worker), so that the user sees one
line, not one traceback per process.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import uuid
from pathlib import Path

from .distributed import DEFAULT_TIMEOUT, ERRORS_ENV, LAUNCHER_ENV, default_threads, first_line
from .errors import UserError
from .runtime import usable_cores

LAUNCH_SHUTDOWN = 300  # seconds the launcher waits for workers to save and exit after a signal
LAUNCHER_FLAGS = ("--nproc", "--nnodes", "--rdzv-endpoint")
THREAD_ENVS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def launches(nproc: int | None, nnodes: int | None) -> bool:
    """Whether this `makemore train` is to start workers (--nproc/--nnodes) rather than be one."""
    for name, value in (("nproc", nproc), ("nnodes", nnodes)):
        if value is not None and value < 1:
            raise UserError(f"--{name} must be at least 1, got {value}")
    cores = usable_cores()
    if nproc is not None and nproc > cores:
        raise UserError(f"--nproc {nproc} is more than the {cores} cores of this machine: each worker needs a core "
                        f"of its own (use --nproc {cores} or fewer)")
    wanted = (nproc or 1) > 1 or (nnodes or 1) > 1
    if wanted and "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        raise UserError("this process is already a worker (RANK and WORLD_SIZE are set, e.g. by torchrun): "
                        "drop --nproc/--nnodes and let the launcher start the workers")
    return wanted


def worker_argv(argv: list[str]) -> list[str]:
    """The command line each worker runs: the launcher's own, less the launcher's flags."""
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token in LAUNCHER_FLAGS:
            skip = True
        elif not any(token.startswith(flag + "=") for flag in LAUNCHER_FLAGS):
            out.append(token)
    return out


def _quiet_torch_logs() -> None:
    """torch.distributed.elastic logs every worker it stops and prints its own error reports;
    the launcher says what happened in one line instead."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def launch(argv: list[str], nproc: int | None, nnodes: int | None = None, rdzv_endpoint: str | None = None,
           dist_timeout: float | None = None, threads: int = 0) -> int:
    """Start `nproc` workers running `makemore ARGV` here (and, with `nnodes` M, as many on each
    of M machines meeting at `rdzv_endpoint`) with torch's elastic launcher; return the run's
    exit status. Rank 0 prints the run's own output; anything that fails is one UserError."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    nproc, nnodes = nproc or 1, nnodes or 1
    timeout = DEFAULT_TIMEOUT if dist_timeout is None else dist_timeout
    if timeout <= 0:
        raise UserError(f"--dist-timeout must be positive, got {timeout:g}")
    if nnodes > 1 and not rdzv_endpoint:
        raise UserError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT, the same on every machine")
    threads = threads or default_threads(nproc)
    tmp = Path(tempfile.mkdtemp(prefix="makemore-workers-"))
    env = {ERRORS_ENV: str(tmp), LAUNCHER_ENV: str(os.getpid()), **{k: str(threads) for k in THREAD_ENVS}}
    saved_env = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the workers inherit this process's environment
    endpoint = rdzv_endpoint or "localhost:0"  # --standalone: a free port on this machine
    if rdzv_endpoint:
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
        elastic_launch(config, sys.executable)("-m", "makemore", *worker_argv(argv))
        return 0
    except ChildFailedError as e:
        return _outcome(e.failures, tmp, nproc * nnodes)
    except SignalException as e:  # Ctrl-C or kill: the workers got it too, saved and exited
        return 128 + int(e.sigval)
    except ValueError as e:  # a malformed endpoint
        raise UserError(f"bad --rdzv-endpoint {endpoint!r}: {first_line(e)}") from None
    except Exception as e:  # the rendezvous: RendezvousError, DistNetworkError, socket errors
        if type(e).__name__ == "RendezvousTimeoutError":
            raise UserError(f"not all {nnodes} machines joined the rendezvous at {endpoint} within {timeout:g} s "
                            f"(--dist-timeout)") from None
        if type(e).__module__.startswith("torch.distributed") or isinstance(e, (RuntimeError, OSError)):
            raise UserError(f"the workers could not meet at {endpoint} ({type(e).__name__}: {first_line(e)})") from None
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
        raise UserError(f"bad --rdzv-endpoint {endpoint!r}: {first_line(e)}") from None
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
