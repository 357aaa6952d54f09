"""The one connection helper every store uses: a SQLite database in WAL mode.

Each store (publisher/stores/*.py) declares its tables once, as `SCHEMA`, and creates them with
`ensure` when it is opened; every SQL statement of the program is in this package.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from publisher.errors import PublisherError


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _wal(conn: sqlite3.Connection, patience: float = 30.0) -> None:
    """Put the database in WAL mode. Switching a new database needs a moment of exclusive access,
    and SQLite answers "database is locked" at once — without its busy handler — when another
    process is opening the same new file: two `push` runs started together did crash here. So wait
    for the other opener (bounded), as the busy timeout does for every other statement."""
    deadline = time.monotonic() + patience
    delay = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


class StoreError(PublisherError, sqlite3.OperationalError):
    """A database file could not be read or written (disk full, damaged, unwritable): the message
    names the file and what to do. Still a sqlite3.OperationalError, so the few places that wait
    out a busy database keep working."""

    def __init__(self, path: Path, exc: BaseException):
        super().__init__(explain(path, exc))
        self.path = path
        self.disk_full = _disk_full(path, exc)


def _disk_full(path: Path, exc: BaseException) -> bool:
    if "disk is full" in str(exc) or getattr(exc, "errno", None) == errno.ENOSPC \
            or getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL":
        return True
    if "disk I/O" not in str(exc):  # SQLite says only "disk I/O error" when it cannot grow the -shm file
        return False
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024


def explain(path: Path, exc: BaseException) -> str:
    """What went wrong with the database `path`, and what to do (one rule for every store)."""
    text = str(exc)
    if _disk_full(path, exc):
        return (f"cannot write {path}: the disk is full ({text}). Free space on its filesystem, then run "
                "the command again: what was recorded is kept, and a push resumes where it stopped")
    if "not a database" in text or "malformed" in text or "encrypted" in text:
        return (f"{path} is damaged ({text}): it is not a readable SQLite database. Restore it from a "
                "backup (see docs/email.md, \"When the ledger is lost or damaged\"); do not delete it "
                "to start afresh unless you mean to")
    if "readonly" in text or "unable to open" in text or "disk I/O" in text or "Permission" in text:
        return (f"cannot open or write {path} ({text}): make the file and its folder writable by this "
                f"user (SQLite also writes {path.name}-wal and {path.name}-shm beside it), then run "
                "the command again")
    return f"{path}: {text}"


class _Cursor(sqlite3.Cursor):
    """A cursor whose errors (also while fetching rows) name the database file."""

    def _wrap(self, call, *args):
        try:
            return call(*args)
        except (sqlite3.OperationalError, sqlite3.DatabaseError) as exc:
            if isinstance(exc, StoreError) or type(exc) not in _WRAPPED:
                raise
            raise StoreError(self.connection.path, exc) from None

    def execute(self, *args):
        return self._wrap(super().execute, *args)

    def executemany(self, *args):
        return self._wrap(super().executemany, *args)

    def executescript(self, *args):
        return self._wrap(super().executescript, *args)

    def fetchone(self):
        return self._wrap(super().fetchone)

    def fetchall(self):
        return self._wrap(super().fetchall)

    def __next__(self):
        return self._wrap(super().__next__)


_WRAPPED = (sqlite3.OperationalError, sqlite3.DatabaseError)  # exactly these: not integrity errors


class _Connection(sqlite3.Connection):
    """A connection whose errors name its file (StoreError)."""

    path: Path

    def execute(self, *args):
        return self.cursor(_Cursor).execute(*args)

    def executemany(self, *args):
        return self.cursor(_Cursor).executemany(*args)

    def executescript(self, *args):
        return self.cursor(_Cursor).executescript(*args)


class SQLiteStore:
    """A SQLite database in WAL mode; safe to share between threads (one connection each)."""

    schema = ""  # created on open

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(self.path, exc) from None
        self._local = threading.local()
        if self.schema:
            self.ensure(self.schema)

    def connect(self) -> sqlite3.Connection:
        """This thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.open()
        return conn

    def open(self) -> sqlite3.Connection:
        """A new connection (autocommit, WAL); the caller owns it — and, if threads share it,
        serializes its use."""
        try:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False,
                                   factory=_Connection)
        except sqlite3.Error as exc:
            raise StoreError(self.path, exc) from None
        conn.path = self.path
        conn.row_factory = sqlite3.Row
        try:
            _wal(conn)
            # NORMAL in WAL mode: a commit survives a process crash (kill -9); only an OS crash or
            # power loss can roll back the last transactions.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self.connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite may have rolled back already (disk full)
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    def ensure(self, schema_sql: str) -> None:
        self.connect().executescript(schema_sql)


class DiskReserve:
    """Room kept on the disk of a database while a long run writes to it: a file of SIZE bytes
    beside it (`<name>.reserve`). When the disk fills up (`low()`: less than LOW bytes free, or a
    write failed with "disk is full") the run releases it, so what is in flight can still be
    recorded and the run stops cleanly instead of losing its last records."""

    SIZE = 2 * 1024 * 1024
    LOW = 256 * 1024
    EVERY = 0.05  # seconds between two looks at the free space

    def __init__(self, db_path: Path):
        self.db = Path(db_path)
        self.file = self.db.with_name(self.db.name + ".reserve")
        self.held = False
        self._next = 0.0

    def take(self) -> None:
        try:
            with open(self.file, "wb") as f:
                try:
                    os.posix_fallocate(f.fileno(), 0, self.SIZE)
                except (AttributeError, OSError) as exc:
                    if getattr(exc, "errno", None) == errno.ENOSPC:
                        raise
                    f.write(bytes(self.SIZE))  # no fallocate here: write the bytes
                    f.flush()
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.file.unlink()
            raise StoreError(self.db, exc) from None
        self.held = True

    def release(self) -> bool:
        """Free the room; True when there was any to free."""
        held, self.held = self.held, False
        if held:
            with contextlib.suppress(OSError):
                self.file.unlink()
        return held

    def low(self) -> bool:
        """Whether the disk is (nearly) full; looks at most every EVERY seconds."""
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.EVERY
        try:
            st = os.statvfs(self.db.parent)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < self.LOW
