"""Where makemore writes: every output path is checked, created and written through here.

A command that writes says so up front: `new_dir(path)` for a folder it creates (a run, an
ensemble, lr-find's and sweep's output), `output_file(path)` for a file it writes (a plot).
Both check the path before any work is done (not inside a file, not an existing file where a
folder is wanted, not an existing run unless resuming; a folder not inside a run either:
`check_not_a_run`), and a folder made by a command that
then fails is removed with every parent it made: a failed command leaves nothing behind.

Every file is written atomically (`atomic_write`: a temp file beside it, fsynced, renamed over
it), so a kill mid-write leaves the old file or the complete new one. An OS error on the way
(no space, permission, a read-only file system, a path through a file) becomes one UserError
naming the path and the cause (`os_error`), and the CLI prints it as one line.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import UserError

CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EPIPE: "the reader closed the pipe",
    errno.EIO: "input/output error",
}


def os_error(e: OSError, path: str | Path | None = None, doing: str = "write") -> UserError:
    """One line for an OS error met while writing: the path and the cause."""
    where = path if path is not None else (e.filename or "the output")
    cause = CAUSES.get(e.errno) or (e.strerror or str(e)).lower()
    return UserError(f"cannot {doing} {where}: {cause}")


@contextmanager
def writing(path: str | Path | None = None, doing: str = "write") -> Iterator[None]:
    """Turn an OSError raised inside into os_error's one line (naming `path`, else the error's own)."""
    try:
        yield
    except UserError:
        raise
    except OSError as e:
        raise os_error(e, path if path is not None else e.filename, doing) from None


def _file_above(path: Path) -> Path | None:
    """The nearest existing ancestor of `path` if it is not a folder (a path inside a file)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _cannot_write(folder: Path) -> OSError | None:
    """Why this process cannot create or change files in `folder`, as the OSError a write there
    would raise (os.access says only whether: a read-only mount is EROFS, as a write would say,
    not "permission denied"); None where it can."""
    if os.access(folder, os.W_OK | (os.X_OK if folder.is_dir() else 0)):
        return None
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    code = errno.EROFS if read_only else errno.EACCES
    return OSError(code, os.strerror(code), str(folder))


def check_can_write(path: Path, what: str, folder: Path | None = None) -> None:
    """`folder` (default `path`) may be written by this process, or one UserError worded as a
    failed write is (os_error: the same cause for the same OS error, checked or met)."""
    folder = path if folder is None else folder
    error = _cannot_write(folder)
    if error is not None:
        raise os_error(error, f"{what} {path}" + ("" if folder == path else f" (in {folder})"))


def check_writable_parent(path: Path, what: str) -> None:
    """`path`'s nearest existing ancestor is a folder this process may write into."""
    inside = _file_above(path)
    if inside is not None:
        raise UserError(f"{what} {path} is inside {inside}, which is a file")
    check_can_write(path, what, next((p for p in path.parents if p.exists()), Path(".")))


def check_not_empty(path: str | Path, what: str) -> None:
    """Path("") is ".", the folder the command runs in: an empty --out is a mistake, not that."""
    if not str(path).strip():
        raise UserError(f"{what} is empty; give a name")


def check_new_dir(path: str | Path, what: str = "--out", hint: str = "") -> Path:
    """A folder to create: it must not exist yet, nor be inside a run, and its parent must be writable."""
    check_not_empty(path, what)
    path = Path(path)
    if path.exists() or path.is_symlink():
        kind = "a folder" if path.is_dir() else "a file"
        raise UserError(f"{what} {path} already exists ({kind}){hint or '; pick another'}")
    check_not_a_run(path, what)
    check_writable_parent(path, what)
    return path


@contextmanager
def new_dir(path: str | Path, what: str = "--out", hint: str = "", keep: Callable[[Path], bool] | None = None):
    """Create the folder `path` (and missing parents) for a command's output; if the command
    fails, remove it and the parents it made, unless `keep(path)` says it holds something worth
    keeping (a run with a checkpoint, which can be resumed). Yields the path."""
    path = check_new_dir(path, what, hint)
    made = [p for p in reversed(path.parents) if not p.exists()] + [path]
    try:
        with writing(path, "create"):
            for p in made[:-1]:
                p.mkdir(exist_ok=True)
            path.mkdir()  # raises if another process made it since the check: that one is not ours
    except UserError:
        if path.exists():
            raise UserError(f"{what} {path} already exists (made a moment ago by another process)"
                            f"{hint or '; pick another'}") from None
        raise
    try:
        yield path
    except BaseException:
        if keep is None or not keep(path):
            for p in reversed(made):
                shutil.rmtree(p, ignore_errors=True) if p == path else _rmdir_if_empty(p)
        raise


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def _is_run(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "best.safetensors").exists()


def check_not_a_run(path: str | Path, what: str = "--out") -> None:
    """A command's own folder is never a training run's, nor inside one: its files would mix with
    the run's (`train --out` refuses any existing folder), a run inside a run is copied with it
    (`ensemble`), and `ensemble --out` inside a member would copy the member into itself without end."""
    path = Path(path)
    if _is_run(path):
        raise UserError(f"{what} {path} is a training run's directory: give a folder of this command's own")
    # as written (the name the user knows), then resolved (through a symlink or a "..")
    run = next((p for p in [*path.parents, *path.resolve().parents] if _is_run(p)), None)
    if run is not None:
        raise UserError(f"{what} {path} is inside the training run {run}: give a folder outside it")


def check_reused_dir(path: str | Path, what: str = "--out") -> Path:
    """A folder that may exist already (a sweep continues in it): not empty, not a file, not a run."""
    check_not_empty(path, what)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} exists and is a file, not a folder")
    check_not_a_run(path, what)
    return path


@contextmanager
def reused_dir(path: str | Path, what: str = "--out"):
    """A folder that may exist (a sweep continues in it): created if missing, and removed again
    with the parents made for it if the command fails having written nothing into it."""
    path = check_reused_dir(path, what)
    if path.is_dir():
        check_can_write(path, what)
        yield path
        return
    with new_dir(path, what, keep=lambda p: any(p.iterdir())) as made:
        yield made


def output_file(path: str | Path, what: str = "--out") -> Path:
    """A file to (over)write: not a folder, not inside a file, its folder writable (made if missing)."""
    check_not_empty(path, what)
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; give a file name")
    check_writable_parent(path, what)
    if path.exists():
        check_can_write(path, what)
    return path


def umask() -> int:
    """The process's umask (read without changing it for longer than the call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Write `path` by calling `write(tmp_path)` on a temp file beside it, then renaming.

    os.replace is atomic on POSIX, so a reader (or a kill -9 in the middle) sees either the
    old file or the complete new one, never a truncated mix. An OS error is one UserError."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            write(tmp)
            os.chmod(tmp, 0o666 & ~umask())  # mkstemp's 0600 would hide the file from other users
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def atomic_write_text(path: str | Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
