"""The one connection helper every store uses: a SQLite database in WAL mode.

Each store (publisher/stores/*.py) declares its tables once, as `SCHEMA`, and creates them with
`ensure` when it is opened; every SQL statement of the program is in this package.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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


class SQLiteStore:
    """A SQLite database in WAL mode; safe to share between threads (one connection each)."""

    schema = ""  # created on open

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
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
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        _wal(conn)
        # NORMAL in WAL mode: a commit survives a process crash (kill -9); only an OS crash or
        # power loss can roll back the last transactions.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
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
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def ensure(self, schema_sql: str) -> None:
        self.connect().executescript(schema_sql)
