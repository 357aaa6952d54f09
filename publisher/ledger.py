"""The ledger: one SQLite database (WAL mode) recording what went where.

The core table is `pushes`: one row per (issue, channel) with its state. Other parts of the
program keep their own tables in the same database (email sends, WeChat tokens and uploads, the
link-check cache); each creates its tables with `Ledger.ensure(schema_sql)`.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PUSHES_SCHEMA = """
CREATE TABLE IF NOT EXISTS pushes (
    issue       TEXT NOT NULL,
    channel     TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'pushing', 'done', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    remote_id   TEXT,
    url         TEXT,
    details     TEXT NOT NULL DEFAULT '{}',
    last_error  TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (issue, channel)
);
"""

STATES = ("pending", "pushing", "done", "failed")


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class PushRecord:
    issue: str
    channel: str
    state: str
    attempts: int
    remote_id: str | None
    url: str | None
    details: Mapping[str, Any]
    last_error: str | None
    created_at: str
    updated_at: str


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
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives a process crash (kill -9); only an OS crash or
            # power loss can roll back the last transactions.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
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


class Ledger(SQLiteStore):
    """The ledger: pushes, plus the tables other parts add with `ensure`."""

    schema = PUSHES_SCHEMA

    # -- pushes ----------------------------------------------------------------------------

    def get(self, issue: str, channel: str) -> PushRecord | None:
        row = self.connect().execute(
            "SELECT * FROM pushes WHERE issue = ? AND channel = ?", (issue, channel)
        ).fetchone()
        return _record(row) if row else None

    def records(self, issue: str | None = None) -> list[PushRecord]:
        sql = "SELECT * FROM pushes"
        args: tuple = ()
        if issue:
            sql += " WHERE issue = ?"
            args = (issue,)
        rows = self.connect().execute(sql + " ORDER BY issue DESC, channel", args).fetchall()
        return [_record(r) for r in rows]

    def begin(self, issue: str, channel: str) -> PushRecord:
        """Mark a push as under way (state pushing, attempts + 1) and return the record."""
        now = now_iso()
        with self.transaction() as conn:
            conn.execute(
                """INSERT INTO pushes (issue, channel, state, attempts, created_at, updated_at)
                   VALUES (?, ?, 'pushing', 1, ?, ?)
                   ON CONFLICT (issue, channel) DO UPDATE SET
                     state = 'pushing', attempts = attempts + 1, updated_at = excluded.updated_at""",
                (issue, channel, now, now),
            )
        record = self.get(issue, channel)
        assert record is not None
        return record

    def update(self, issue: str, channel: str, **fields: Any) -> None:
        """Update remote_id, url, details (merged), last_error or state of a push."""
        allowed = {"state", "remote_id", "url", "details", "last_error"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"unknown ledger fields {bad}")
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT details FROM pushes WHERE issue = ? AND channel = ?", (issue, channel)
            ).fetchone()
            if row is None:
                now = now_iso()
                conn.execute(
                    "INSERT INTO pushes (issue, channel, state, created_at, updated_at) VALUES (?, ?, 'pending', ?, ?)",
                    (issue, channel, now, now),
                )
                details = {}
            else:
                details = json.loads(row["details"])
            if "details" in fields:
                details.update(fields.pop("details") or {})
                fields["details"] = json.dumps(details, ensure_ascii=False, sort_keys=True)
            if "state" in fields and fields["state"] not in STATES:
                raise ValueError(f"bad state {fields['state']}")
            sets = ", ".join(f"{k} = ?" for k in fields)
            conn.execute(
                f"UPDATE pushes SET {sets}, updated_at = ? WHERE issue = ? AND channel = ?",
                (*fields.values(), now_iso(), issue, channel),
            )

    def finish(self, issue: str, channel: str, *, remote_id: str | None = None, url: str | None = None,
               details: Mapping[str, Any] | None = None) -> None:
        self.update(issue, channel, state="done", remote_id=remote_id, url=url,
                    details=dict(details or {}), last_error=None)

    def fail(self, issue: str, channel: str, error: str, details: Mapping[str, Any] | None = None) -> None:
        self.update(issue, channel, state="failed", last_error=error, details=dict(details or {}))


def _record(row: sqlite3.Row) -> PushRecord:
    return PushRecord(
        issue=row["issue"],
        channel=row["channel"],
        state=row["state"],
        attempts=row["attempts"],
        remote_id=row["remote_id"],
        url=row["url"],
        details=json.loads(row["details"] or "{}"),
        last_error=row["last_error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
