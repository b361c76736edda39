"""Where a study lives: an Optuna RDB storage (Akiba et al. 2019, "Optuna: a next-generation
hyperparameter optimization framework", KDD) opened from a database URL, with one error line for
each thing that can go wrong.

A study is a SQLite file by default (OUT/study.db), or any database URL that SQLAlchemy and
Optuna accept (PostgreSQL for workers on several machines). What lets many workers share one:

- every SQLite transaction starts with BEGIN IMMEDIATE (_serialize_sqlite, SQLAlchemy's
  documented recipe for pysqlite transactions), so two workers never both take one trial;
- a lock held by one worker of a study at a time (_Lock): an flock on the SQLite database file
  itself (SQLite's own locks are fcntl record locks, which an flock does not touch, and no file
  is made beside the user's), a PostgreSQL advisory lock (pg_advisory_lock) on a server;
- heartbeats (Optuna's heartbeat_interval and grace_period): the worker running a trial records
  one every --heartbeat seconds from a thread (_heartbeats); a trial with none for the grace
  period counts as dead, and optuna.storages.fail_stale_trials fails it.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import warnings
from pathlib import Path
from typing import Iterator

from ..errors import UserError

DEFAULT_OUT = "runs/tune"
DEFAULT_STUDY = "makemore"
DEFAULT_HEARTBEAT = 20  # seconds between a running trial's heartbeats
STUDY_ATTR = "makemore"  # study user attribute: data, model, steps cap, seed, fixed settings


def _optuna():
    """Import optuna quietly: its INFO lines and experimental-feature warnings are ours to word."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    return optuna


def default_storage(out: str | Path) -> str:
    return "sqlite:///" + str((Path(out) / "study.db").resolve())


def redact(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: say it as given, it holds no password we could hide
        return url


def resolve_url(url: str) -> str:
    """`url` with a driver that is installed: SQLAlchemy 2.1 reads a bare postgresql:// as
    psycopg (version 3); where only psycopg2 is installed, postgresql:// means psycopg2."""
    import importlib.util

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise UserError(f"cannot use storage {url}: not a database URL (e.g. sqlite:///runs/tune/study.db, "
                        f"postgresql://user:password@host/db)") from None
    if parsed.drivername == "postgresql":
        for driver in ("psycopg", "psycopg2"):
            if importlib.util.find_spec(driver) is not None:
                return parsed.set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)
    return url


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):
        # Wait for a busy database (up to 60 s) instead of failing with "database is locked".
        return {"connect_args": {"timeout": 60}}
    if url.startswith("postgresql"):
        return {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    return {"pool_pre_ping": True}


def _sqlite_path(url: str) -> Path | None:
    """The file of a sqlite:/// URL, None for an in-memory database or another backend."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


SQLITE_HEADER = b"SQLite format 3\x00"


def check_storage(url: str) -> Path | None:
    """Refuse a storage that cannot work, before anything is written: a URL that does not parse,
    and for SQLite a path that is a folder, lies inside a file or in a folder we may not write,
    or a file that is not a SQLite database. Returns the SQLite file (None for another backend)."""
    from ..outputs import check_writable_parent

    path = _sqlite_path(resolve_url(url)) if url.startswith("sqlite") else None
    if path is None and url.startswith("sqlite"):  # each connection would get a database of its own, empty
        raise UserError(f"cannot use storage {url}: an in-memory SQLite database is one process's alone (the "
                        f"workers and a later --report could not read it); give a file, e.g. "
                        f"sqlite:///runs/tune/study.db")
    if path is None:
        return None
    if path.is_dir():
        raise UserError(f"cannot use storage {url}: {path} is a folder")
    check_writable_parent(path, "--storage")
    if path.is_file():
        try:
            with open(path, "rb") as f:
                head = f.read(len(SQLITE_HEADER))
        except OSError as e:
            raise UserError(f"cannot use storage {url}: {e.strerror}") from None
        if head and head != SQLITE_HEADER:
            raise UserError(f"cannot use storage {url}: {path} is not a SQLite database")
    return path


def _storage_error(url: str, e: BaseException) -> UserError:
    detail = str(getattr(e, "orig", None) or e).strip().splitlines()
    detail = detail[0] if detail else type(e).__name__
    return UserError(f"cannot use storage {redact(url)}: {detail}")


@contextlib.contextmanager
def _storage_errors(url: str, database_only: bool = False) -> Iterator[None]:
    """Turn a database that cannot be reached, parsed or read into one UserError line.

    database_only: only the database's own errors (around code that also trains, where a
    ValueError or RuntimeError would be a bug to show with its traceback).
    """
    import sqlalchemy.exc

    caught = (sqlalchemy.exc.SQLAlchemyError,) if database_only else (
        sqlalchemy.exc.SQLAlchemyError, ValueError, RuntimeError, KeyError)
    try:
        yield
    except UserError:
        raise
    except ImportError as e:
        if database_only:
            raise
        raise UserError(f"storage {redact(url)} needs a database driver that is not installed ({e}); "
                        f"for PostgreSQL: pip install 'makemore[postgres]'") from None
    except caught as e:
        raise _storage_error(url, e) from None


def _serialize_sqlite(engine) -> None:
    """Start every SQLite transaction with BEGIN IMMEDIATE.

    pysqlite opens a transaction only at the first write, so two workers can both read a trial
    as WAITING and both claim it, or deadlock on upgrading their read locks (SQLite then answers
    "database is locked" at once, without waiting). Taking the write lock at BEGIN makes every
    transaction wait its turn (up to the connect timeout) and see the others' commits. This is
    SQLAlchemy's documented recipe for pysqlite transactions.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # pysqlite emits no BEGIN of its own

    @event.listens_for(engine, "begin")
    def _begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the hooks go; new ones get them


def open_storage(url: str, heartbeat: int | None = None, create: bool = True, on_stale=None):
    """An RDBStorage for `url`. With create=False the database must already hold studies.
    on_stale(study, frozen_trial) is called for each trial this process fails for want of
    heartbeats (optuna's fail_stale_trials)."""
    optuna = _optuna()
    shown, url = url, resolve_url(url)
    path = _sqlite_path(url) if url.startswith("sqlite") else None
    if not create and path is not None and not path.is_file():
        raise UserError(f"no study database at {path}")
    if create and path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {}
    if heartbeat is not None:
        kwargs = {"heartbeat_interval": heartbeat, "grace_period": grace_period(heartbeat),
                  "heartbeat_stale_trial_callback": on_stale}
    with _storage_errors(shown):
        storage = optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url),
                                             skip_table_creation=not create, **kwargs)
        if storage.engine.dialect.name == "sqlite":
            _serialize_sqlite(storage.engine)
    return storage


def grace_period(heartbeat: int) -> int:
    """Seconds without a heartbeat after which a running trial counts as dead."""
    return 3 * heartbeat


class _Lock:
    """A lock shared by every worker of a study: a file lock beside a SQLite database, a
    PostgreSQL advisory lock (released by the server if the worker dies), or none."""

    def __init__(self, url: str, study_name: str):
        self.shown, url = url, resolve_url(url)
        self.url, self.kind, self.engine, self.path = url, "none", None, None
        path = _sqlite_path(url) if url.startswith("sqlite") else None
        if path is not None:
            self.kind, self.path = "file", path
        elif url.startswith("postgresql"):
            import sqlalchemy
            from sqlalchemy.pool import NullPool

            self.kind = "postgresql"
            digest = hashlib.sha256(f"makemore-tune:{study_name}".encode()).digest()
            self.key = int.from_bytes(digest[:8], "big", signed=True)
            with _storage_errors(self.shown):
                self.engine = sqlalchemy.create_engine(url, poolclass=NullPool, **{
                    k: v for k, v in _engine_kwargs(url).items() if k != "pool_pre_ping"})

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        if self.kind == "file":
            import fcntl

            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)
        elif self.kind == "postgresql":
            from sqlalchemy import text

            with _storage_errors(self.shown):
                conn = self.engine.connect()
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                conn.close()
        else:
            yield


@contextlib.contextmanager
def _heartbeats(storage, trial_id: int, interval: float) -> Iterator[None]:
    """Record the trial's heartbeat every `interval` seconds in a thread, as study.optimize
    does for the trials it runs: a worker that dies (even by SIGKILL) stops them."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            storage.record_heartbeat(trial_id)

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def load_study(study_name: str, url: str):
    optuna = _optuna()
    storage = open_storage(url, create=False)
    with _storage_errors(url):
        names = optuna.get_all_study_names(storage)
        if study_name not in names:
            there = ", ".join(repr(n) for n in names) or "none"
            raise UserError(f"no study named {study_name!r} in {redact(url)} (studies there: {there})")
        return optuna.load_study(study_name=study_name, storage=storage)
