"""Work done in a process of its own: a job written to a private file, a fresh interpreter
started on it, its outcome read back from another file.

Seed ensembles train their members side by side this way (ensembles.py), and a budget run trains
the learned count model beside its neural model (interpolation.fit_apart): on a CPU where a
step runs fastest on one thread, the other cores would idle.

A child is a fresh interpreter running `entry`, not multiprocessing's spawn: spawn imports the
caller's main script again in each child, so a user's script that calls mm.train without an
`if __name__ == "__main__"` guard would start its training again there, and fail. Its outcome is
("ok", ...), ("user", message) for an error the user can fix, or ("error", traceback).
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path


def start(entry: str, args: list[Path], threads: int | None = None) -> subprocess.Popen:
    """A fresh interpreter running the Python line `entry` with `args` in its argv, importing
    this very package wherever it was imported from; `threads`: its BLAS and torch threads."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                         *filter(None, [env.get("PYTHONPATH")])])
    if threads:
        from .runtime import THREAD_ENVIRONMENT

        env.update({name: str(threads) for name in THREAD_ENVIRONMENT})
    return subprocess.Popen([sys.executable, "-c", entry, *map(str, args)], env=env)


def dump(path: Path, obj) -> None:
    tmp = Path(path).with_suffix(".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)  # the reader never reads half an outcome


def load(path):
    with open(path, "rb") as f:
        return pickle.load(f)  # noqa: S301 (our own job files, in a directory only this user can read)


def outcome(result: Path, returncode: int, what: str):
    """The outcome a child wrote, or ("error", why there is none) once it has ended."""
    if Path(result).exists():
        return load(result)
    how = f"was killed by signal {-returncode}" if returncode < 0 else f"ended with exit status {returncode}"
    return ("error", f"the process of {what} {how} before it reported (out of memory?)")


def send(children, signum) -> None:
    for child in children:
        if child.poll() is None:
            try:
                child.send_signal(signum)
            except OSError:  # it ended meanwhile
                pass


@contextmanager
def passing_signals(children):
    """While the children work: SIGINT or SIGTERM to this process is passed on as SIGTERM."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def handler(signum, frame):
        send(children, signal.SIGTERM)

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
