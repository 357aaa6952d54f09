"""The ledger: one SQLite database (WAL mode) recording what went where.

The core table is `pushes`: one row per (issue, channel) with its state. The other stores on
the ledger keep their tables in the same database (publisher/stores/mail.py, wechat.py,
linkcache.py); each creates its tables with `Ledger.ensure(SCHEMA)` when it is opened.

`leases`: one row per (issue, channel) being sent right now, with its holder (pid, host, process
start, a random token) and a heartbeat. Everything that sends takes the lease first, in one
transaction (`Ledger.acquire`): a second sender refuses at once naming the holder; a lease whose
holder is dead (same host: no such process, or a different process under that pid) or whose
heartbeat stopped (any host: older than LEASE_STALE seconds) is taken over. The rules are those
of a row lease in a shared database (PostgreSQL: `SELECT … FOR UPDATE` on the lease row, then
the same holder checks), not of a file lock.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from publisher.stores.base import DatabaseError, Store, db_errors, now_iso
from publisher.stores.schema import open_part

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

LEASES_SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    issue       TEXT NOT NULL,
    channel     TEXT NOT NULL,
    token       TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    host        TEXT NOT NULL,
    proc_start  TEXT NOT NULL,
    command     TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    heartbeat   REAL NOT NULL,
    PRIMARY KEY (issue, channel)
);
"""
META_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_meta (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL
);
"""
LEASE_BEAT = 5.0  # seconds between heartbeats
LEASE_STALE = 60.0  # a heartbeat older than this means the holder is gone (any host)


class LeaseHeld(Exception):
    """Another live process is sending this (issue, channel)."""

    def __init__(self, issue: str, channel: str, holder: Mapping[str, Any]):
        self.holder = dict(holder)
        age = time.time() - float(holder["heartbeat"])
        super().__init__(
            f"{issue} {channel} is being sent by another process: pid {holder['pid']} on "
            f"{holder['host']} ({holder['command']}), since {holder['started_at']}, heartbeat "
            f"{age:.0f} s ago. Wait for it to finish (`publisher status {issue}`); if that process is "
            f"gone its lease is taken over automatically (at once on this host, after "
            f"{LEASE_STALE:.0f} s without heartbeat elsewhere)")


def _proc_start(pid: int) -> str:
    """The process's start time (Linux: /proc/PID/stat field 22), '' when unknown; with the pid
    it names one process even after the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return ""
    fields = stat.rsplit(b")", 1)[-1].split()
    if len(fields) > 19 and fields[0] == b"Z":  # a zombie has finished
        return "zombie"
    return fields[19].decode() if len(fields) > 19 else ""


def _alive(pid: int, proc_start: str) -> bool:
    """Whether the process that took a lease on this host still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    now = _proc_start(pid)
    if now == "zombie":
        return False
    return not (proc_start and now and now != proc_start)


# The host identity of the leases: the machine's name, or PUBLISHER_HOST (two deployments on one
# machine, or tests standing in for two hosts). A pid is checked only against the same host.
_HOST = os.environ.get("PUBLISHER_HOST") or socket.gethostname()


def checkpoint(name: str) -> None:
    """Crash-test hook: with PUBLISHER_PAUSE_AT=name in the environment, announce the point (in
    the file PUBLISHER_PAUSE_FILE) and wait there to be killed. A no-op otherwise."""
    if os.environ.get("PUBLISHER_PAUSE_AT") != name:
        return
    where = os.environ.get("PUBLISHER_PAUSE_FILE")
    if where:
        with open(where, "w", encoding="utf-8") as f:
            f.write(f"{name} {os.getpid()}\n")
    while True:
        time.sleep(60)


class Lease:
    """A held lease; a daemon thread renews its heartbeat until release(). `lost` is set when the
    lease was taken over (our heartbeat stopped for LEASE_STALE): the holder must stop sending.

    A process that was paused (SIGSTOP, a frozen VM) cannot learn from its heartbeat thread in time:
    on waking, its senders run as soon as it does. So a sender asks `valid()` before each message:
    free while the last confirmed heartbeat is recent (monotonic clock, which runs on while a
    process is stopped), a synchronous check of the lease row when it is not; and `taken_over()`
    after each message (one sent after a takeover may also have been sent by the new holder)."""

    def __init__(self, ledger: Ledger, issue: str, channel: str, token: str):
        self.ledger, self.issue, self.channel, self.token = ledger, issue, channel, token
        self.lost = threading.Event()
        self.confirmed = time.monotonic()  # when the heartbeat last surely reached the ledger
        self._stop = threading.Event()
        self._renew_lock = threading.Lock()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{channel}", daemon=True)
        self._thread.start()

    def _renew(self, store: Store) -> None:
        """Write our heartbeat; `lost` when the row is no longer ours."""
        with self._renew_lock:
            if self.lost.is_set():
                return
            at = time.monotonic()
            cur = store.connect().execute(
                "UPDATE leases SET heartbeat = ? WHERE issue = ? AND channel = ? AND token = ?",
                (time.time(), self.issue, self.channel, self.token))
            if cur.rowcount == 0:
                self.lost.set()
            else:
                self.confirmed = at

    def _beat(self) -> None:
        store = self.ledger.same()
        try:
            while not self._stop.wait(LEASE_BEAT) and not self.lost.is_set():
                try:
                    self._renew(store)
                except (*db_errors(), DatabaseError):
                    continue  # busy, or the server is restarting: try again at the next beat
        finally:
            store.close()

    def valid(self) -> bool:
        """Whether the lease is surely still ours (call before each message)."""
        if self.lost.is_set():
            return False
        if time.monotonic() - self.confirmed < 2 * LEASE_BEAT:
            return True
        try:
            self._renew(self.ledger)  # late heartbeat: we may have been paused; ask the ledger
        except (*db_errors(), DatabaseError):
            return time.monotonic() - self.confirmed < LEASE_STALE / 2
        return not self.lost.is_set()

    def taken_over(self) -> bool:
        """After a message went out: whether another process may have held the lease by then (the
        message may have been sent by the new holder too: ambiguous). Cheap unless our confirmed
        heartbeat is LEASE_STALE old; then the ledger decides."""
        if self.lost.is_set():
            return True
        if time.monotonic() - self.confirmed < LEASE_STALE:
            return False
        return not self.valid()

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        with self.ledger.transaction() as conn:
            conn.execute("DELETE FROM leases WHERE issue = ? AND channel = ? AND token = ?",
                         (self.issue, self.channel, self.token))

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


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


class Ledger(Store):
    """The ledger: pushes, plus the tables other parts add with `ensure`."""

    schema = PUSHES_SCHEMA + LEASES_SCHEMA + META_SCHEMA
    part = "ledger"

    def create(self) -> None:
        open_part(self)  # create the versioned part, or check its version

    # -- identity --------------------------------------------------------------------------

    def identity(self) -> str:
        """This ledger's id: random, made once when the ledger is created (an emptied, deleted or
        replaced ledger has another); the subscribers database remembers it per campaign."""
        conn = self.connect()
        row = conn.execute("SELECT value FROM ledger_meta WHERE key = 'id'").fetchone()
        if row is None:
            conn.execute("INSERT INTO ledger_meta (key, value) VALUES ('id', ?) ON CONFLICT (key) DO NOTHING",
                         (secrets.token_hex(16),))
            row = conn.execute("SELECT value FROM ledger_meta WHERE key = 'id'").fetchone()
        return row[0]

    # -- leases ----------------------------------------------------------------------------

    def acquire(self, issue: str, channel: str, command: str | None = None) -> Lease:
        """Take the (issue, channel) lease or raise LeaseHeld naming its live holder."""
        now = time.time()
        token = secrets.token_hex(16)
        pid = os.getpid()
        command = command or " ".join(os.path.basename(a) if i == 0 else a
                                      for i, a in enumerate(sys.argv[:4]))
        with self.transaction() as conn:  # one writer decides (BEGIN IMMEDIATE / advisory lock)
            row = conn.execute("SELECT * FROM leases WHERE issue = ? AND channel = ?",
                               (issue, channel)).fetchone()
            if row is not None:
                stale = now - float(row["heartbeat"]) > LEASE_STALE
                dead = row["host"] == _HOST and not _alive(row["pid"], row["proc_start"])
                if not (stale or dead):
                    raise LeaseHeld(issue, channel, dict(row))
            conn.execute(
                """INSERT INTO leases
                   (issue, channel, token, pid, host, proc_start, command, started_at, heartbeat)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (issue, channel) DO UPDATE SET token = excluded.token, pid = excluded.pid,
                     host = excluded.host, proc_start = excluded.proc_start, command = excluded.command,
                     started_at = excluded.started_at, heartbeat = excluded.heartbeat""",
                (issue, channel, token, pid, _HOST, _proc_start(pid), command[:200], now_iso(), now))
        return Lease(self, issue, channel, token)

    def leases(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.connect().execute("SELECT * FROM leases ORDER BY issue, channel")]

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
                     state = 'pushing', attempts = pushes.attempts + 1, updated_at = excluded.updated_at""",
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

    def add_counts(self, issue: str, channel: str, counts: Mapping[str, int]) -> None:
        """Add to counters in a push's details (one transaction), leaving its state alone: what a
        sender that lost its lease did, recorded beside the new holder's push."""
        with self.transaction() as conn:
            row = conn.execute("SELECT details FROM pushes WHERE issue = ? AND channel = ?",
                               (issue, channel)).fetchone()
            if row is None:
                return
            details = json.loads(row["details"])
            for key, n in counts.items():
                details[key] = int(details.get(key, 0)) + int(n)
            conn.execute("UPDATE pushes SET details = ? WHERE issue = ? AND channel = ?",
                         (json.dumps(details, ensure_ascii=False, sort_keys=True), issue, channel))


def _record(row) -> PushRecord:
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
