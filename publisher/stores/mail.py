"""The mail store, on the ledger: `email_sends` (one row per issue and recipient) and
`mail_events` (bounces, complaints and provider unsubscribes: from the bounce mailbox or a
provider's webhook; kind `unsubscribe` since ledger schema version 2, publisher/stores/schema.py).

email_sends states: pending → sending → sent | failed, or ambiguous (see
publisher/transports/email.py for the rules). `mark` commits one row, `mark_many` several in one
transaction (what a sender's connections recorded in one turn of its loop) — the exactly-once
commit points: `sending` just before the final dot, `sent` after the 250 reply.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator

from publisher.stores.base import Store, now_iso

SENDS_SCHEMA = """
CREATE TABLE IF NOT EXISTS email_sends (
    issue       TEXT NOT NULL,
    email       TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'ambiguous')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    message_id  TEXT,
    smtp_code   INTEGER,
    last_error  TEXT,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (issue, email)
) WITHOUT ROWID;
"""
# WITHOUT ROWID and no secondary index: each per-message commit touches one b-tree page path

EVENTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS mail_events (
    key          TEXT PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('hard', 'soft', 'complaint', 'unsubscribe', 'ignored')),
    email        TEXT,
    issue        TEXT,
    status       TEXT,
    evidence     TEXT NOT NULL,
    action       TEXT NOT NULL,
    source       TEXT NOT NULL,
    processed_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS mail_events_email ON mail_events (email);
"""

SCHEMA = SENDS_SCHEMA + EVENTS_SCHEMA
MARK = """INSERT INTO email_sends (issue, email, state, attempts, message_id, smtp_code, last_error, updated_at)
          VALUES (?, ?, ?, ?, ?, ?, ?, ?)
          ON CONFLICT (issue, email) DO UPDATE SET state = excluded.state,
            attempts = email_sends.attempts + excluded.attempts, smtp_code = excluded.smtp_code,
            last_error = excluded.last_error, updated_at = excluded.updated_at"""
FINAL_STATES = ("sent", "failed", "ambiguous")


class MailStore:
    """email_sends and mail_events in the ledger `db` (created when opened)."""

    def __init__(self, db: Store):
        self.db = db
        # one writer at a time inside this process: SQLite's busy handler would otherwise make
        # a thread that finds the database locked sleep for milliseconds (widening the window)
        self.write_lock = threading.Lock()
        # and one connection for those writes, shared by the sending threads under that lock: with
        # a connection per thread every commit invalidates the other connections' page caches, so
        # each `mark` re-read its b-tree path from the WAL (see docs/email.md, Benchmark)
        self._writer = None
        db.ensure(SCHEMA)

    def close(self) -> None:
        """Close the shared writer connection (reopened by the next `mark`)."""
        with self.write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    # -- email_sends -------------------------------------------------------------------------

    def mark(self, issue: str, email: str, state: str, *, message_id: str, code: int | None = None,
             error: str | None = None, attempt: bool = False) -> None:
        """Record one recipient's state: a one-row transaction (autocommit)."""
        self.mark_many(issue, [(email, state, message_id, code, error, attempt)])

    def mark_many(self, issue: str, rows: list[tuple]) -> None:
        """Record recipients' states in one transaction, in order: rows of (email, state,
        message_id, smtp_code, error, attempt)."""
        stamp = now_iso()
        with self.write_lock:
            conn = self._writer
            if conn is None:
                conn = self._writer = self.db.open()
            args = [(issue, email, state, 1 if attempt else 0, message_id, code, error, stamp)
                    for email, state, message_id, code, error, attempt in rows]
            if len(args) == 1:
                conn.execute(MARK, args[0])
                return
            conn.execute("BEGIN IMMEDIATE" if self.db.dialect == "sqlite" else "BEGIN")
            try:
                for row in args:
                    conn.execute(MARK, row)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):  # SQLite may have rolled back already (disk full)
                    conn.execute("ROLLBACK")
                raise

    def in_flight(self, issue: str) -> list[str]:
        """Recipients left in `sending` (the ambiguous window) by an interrupted run."""
        return [r[0] for r in self.db.connect().execute(
            "SELECT email FROM email_sends WHERE issue = ? AND state = 'sending'", (issue,))]

    def settle_in_flight(self, issue: str, state: str) -> None:
        """Every `sending` row of `issue` becomes `state` (pending: resend; ambiguous: skip)."""
        with self.db.transaction() as c:
            c.execute("UPDATE email_sends SET state = ?, last_error = 'interrupted in the ambiguous window', "
                      "updated_at = ? WHERE issue = ? AND state = 'sending'", (state, now_iso(), issue))

    def final(self, issue: str, emails: list[str]) -> list[str]:
        """Those of `emails` (one page) with a final row for `issue`: never sent again."""
        marks = ",".join("?" * len(emails))
        # by primary key alone, the state tested here: with the state in the query, PostgreSQL's
        # cached plan walked the campaign's rows (2-4 ms a page at 6,000)
        return [r[0] for r in self.db.connect().execute(
            f"SELECT email, state FROM email_sends WHERE issue = ? AND email IN ({marks})", (issue, *emails))
            if r[1] in FINAL_STATES]

    def failed(self, issue: str) -> list[tuple[str, int | None, str | None]]:
        """(email, smtp_code, last_error) of every `failed` row of `issue`."""
        return [tuple(r) for r in self.db.connect().execute(
            "SELECT email, smtp_code, last_error FROM email_sends WHERE issue = ? "
            "AND state = 'failed'", (issue,)).fetchall()]

    def unfail(self, issue: str, emails: Iterable[str]) -> None:
        """These `failed` rows go back to `pending` (one transaction)."""
        with self.db.transaction() as c:
            c.executemany("UPDATE email_sends SET state = 'pending', updated_at = ? WHERE issue = ? "
                          "AND email = ? AND state = 'failed'",
                          [(now_iso(), issue, e) for e in emails])

    def counts(self, issue: str) -> dict[str, int]:
        """Recipients of `issue` by state."""
        rows = self.db.connect().execute(
            "SELECT state, COUNT(*) FROM email_sends WHERE issue = ? GROUP BY state", (issue,)).fetchall()
        return {r[0]: r[1] for r in rows}

    def listing(self, issue: str, state: str | None = None) -> Iterator[tuple]:
        """(email, state, smtp_code, last_error) of `issue` by email: the rows in `state`, or
        every row not sent when state is None."""
        sql = "SELECT email, state, smtp_code, last_error FROM email_sends WHERE issue = ?"
        args: tuple = (issue,)
        if state is None:
            sql += " AND state NOT IN ('sent')"
        else:
            sql += " AND state = ?"
            args += (state,)
        for row in self.db.connect().execute(sql + " ORDER BY email", args):
            yield tuple(row)

    def sends_to(self, email: str) -> list:
        """Every send to `email` (rows with issue, state, attempts, smtp_code, updated_at)."""
        return self.db.connect().execute(
            "SELECT issue, state, attempts, smtp_code, updated_at FROM email_sends "
            "WHERE email = ? COLLATE NOCASE ORDER BY issue", (email,)).fetchall()

    def delivered_issues(self, email: str, limit: int) -> list[str]:
        """The last `limit` issues sent to `email` (sent or ambiguous), newest first."""
        return [r[0] for r in self.db.connect().execute(
            "SELECT issue FROM email_sends WHERE email = ? COLLATE NOCASE AND state IN ('sent', 'ambiguous') "
            "ORDER BY issue DESC LIMIT ?", (email, limit))]

    # -- mail_events ---------------------------------------------------------------------------

    def event(self, key: str):
        """The event recorded under `key` (kind, email, action), or None."""
        return self.db.connect().execute("SELECT kind, email, action FROM mail_events WHERE key = ?",
                                         (key,)).fetchone()

    def record_event(self, key: str, kind: str, email: str | None, issue: str | None, status: str | None,
                     evidence: str, action: str, source: str) -> None:
        """Record a processed report once (a second record of the same key is ignored)."""
        self.db.connect().execute(
            "INSERT INTO mail_events (key, kind, email, issue, status, evidence, action, source, "
            "processed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
            (key, kind, email, issue, status, evidence, action, source, now_iso()))

    def set_event_action(self, key: str, action: str) -> None:
        self.db.connect().execute("UPDATE mail_events SET action = ? WHERE key = ?", (action, key))

    def soft_bounced_issues(self, email: str) -> set[str]:
        return {r[0] for r in self.db.connect().execute(
            "SELECT DISTINCT issue FROM mail_events WHERE kind = 'soft' AND email = ? COLLATE NOCASE", (email,))}

    def events_of(self, email: str) -> list:
        """Every bounce and complaint of `email` (processed_at, kind, issue, action, evidence)."""
        return self.db.connect().execute(
            "SELECT processed_at, kind, issue, action, evidence FROM mail_events "
            "WHERE email = ? COLLATE NOCASE ORDER BY processed_at", (email,)).fetchall()

    # -- erasure -----------------------------------------------------------------------------------

    def forget(self, email: str) -> int:
        """Erase every send and event of `email` (overwritten on disk: secure_delete, then the
        file is rewritten and the WAL emptied). Returns the number of rows erased."""
        self.db.secure_delete()
        with self.db.transaction() as c:
            n = c.execute("DELETE FROM email_sends WHERE email = ? COLLATE NOCASE", (email,)).rowcount
            n += c.execute("DELETE FROM mail_events WHERE email = ? COLLATE NOCASE", (email,)).rowcount
        self.db.scrub("email_sends", "mail_events")
        return n
