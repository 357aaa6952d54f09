"""Provider calls on the ledger: `email_batches` (one row per HTTP call that may send mail) and
`email_batch_members` (its recipients), beside `email_sends` (publisher/stores/mail.py).

A call to an email service provider hands over up to 1,000 messages at once, so the per-message
commit points of SMTP become per-call ones, each ONE transaction:

* `open_batch`: the call's key (idempotency data: it travels in the messages as metadata), the
  provider, the time, its recipients, and every recipient's `email_sends` row → `sending` with
  its Message-ID — committed before the request leaves;
* `close_batch`: the outcome of every recipient (sent / failed / pending / ambiguous) and the
  batch → `closed`, committed after the reply (or after reconciliation).

A batch still `open` after a crash or a lost reply is reconciled by the provider module before
anything else is sent (publisher/transports/providers/).

Both are `Store.transaction()`s, so the same code runs on a SQLite ledger (BEGIN IMMEDIATE) and on
PostgreSQL ([database] url: a transaction with the store's advisory lock); the statements are in
the SQL both share (an upsert names `email_sends.attempts`: PostgreSQL refuses the bare column).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from publisher.stores.base import Store, now_iso
from publisher.stores.mail import MailStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS email_batches (
    batch       TEXT PRIMARY KEY,
    issue       TEXT NOT NULL,
    provider    TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('open', 'closed')),
    started     REAL NOT NULL,
    size        INTEGER NOT NULL,
    outcome     TEXT
);
CREATE INDEX IF NOT EXISTS email_batches_open ON email_batches (issue, state);
CREATE TABLE IF NOT EXISTS email_batch_members (
    batch       TEXT NOT NULL,
    email       TEXT NOT NULL,
    PRIMARY KEY (batch, email)
) WITHOUT ROWID;
"""


class BatchStore:
    """email_batches and email_batch_members in the ledger `db` (created when opened)."""

    def __init__(self, db: Store):
        self.db = db
        MailStore(db)  # email_sends exists
        db.ensure(SCHEMA)

    def open_batch(self, issue: str, batch: str, provider: str, members: list[tuple[str, str]]) -> float:
        """Record a call before it is made: (email, message_id) of each recipient → `sending`."""
        started = time.time()
        now = now_iso()
        with self.db.transaction() as c:
            c.execute("INSERT INTO email_batches (batch, issue, provider, state, started, size) "
                      "VALUES (?, ?, ?, 'open', ?, ?)", (batch, issue, provider, started, len(members)))
            c.executemany("INSERT INTO email_batch_members (batch, email) VALUES (?, ?)",
                          [(batch, e) for e, _ in members])
            c.executemany(
                """INSERT INTO email_sends (issue, email, state, attempts, message_id, updated_at)
                   VALUES (?, ?, 'sending', 1, ?, ?)
                   ON CONFLICT (issue, email) DO UPDATE SET state = 'sending', attempts = email_sends.attempts + 1,
                     message_id = excluded.message_id, updated_at = excluded.updated_at""",
                [(issue, e, mid, now) for e, mid in members])
        return started

    def close_batch(self, issue: str, batch: str, outcomes: Iterable[tuple[str, str, int | None, str | None]],
                    note: str = "") -> None:
        """(email, state, code, error) of each recipient, and the batch closed: one transaction."""
        now = now_iso()
        with self.db.transaction() as c:
            c.executemany("UPDATE email_sends SET state = ?, smtp_code = ?, last_error = ?, updated_at = ? "
                          "WHERE issue = ? AND email = ?",
                          [(state, code, error, now, issue, e) for e, state, code, error in outcomes])
            c.execute("UPDATE email_batches SET state = 'closed', outcome = ? WHERE batch = ?", (note[:500], batch))

    def open_batches(self, issue: str) -> list[tuple[str, str, float]]:
        """(batch, provider, started) of every call of `issue` whose outcome is not recorded."""
        return [tuple(r) for r in self.db.connect().execute(
            "SELECT batch, provider, started FROM email_batches WHERE issue = ? AND state = 'open' "
            "ORDER BY started", (issue,))]

    def members(self, issue: str, batch: str) -> list[str]:
        """The recipients of `batch` still in `sending` (the others were settled otherwise)."""
        return [r[0] for r in self.db.connect().execute(
            "SELECT m.email FROM email_batch_members m JOIN email_sends s ON s.issue = ? AND s.email = m.email "
            "WHERE m.batch = ? AND s.state = 'sending' ORDER BY m.email", (issue, batch))]

    def stray_sending(self, issue: str) -> list[str]:
        """Rows in `sending` that no open batch accounts for (an SMTP run's, or a half-written one)."""
        return [r[0] for r in self.db.connect().execute(
            "SELECT s.email FROM email_sends s WHERE s.issue = ? AND s.state = 'sending' AND NOT EXISTS "
            "(SELECT 1 FROM email_batch_members m JOIN email_batches b ON b.batch = m.batch "
            " WHERE m.email = s.email AND b.issue = s.issue AND b.state = 'open')", (issue,))]

    def close(self) -> None:
        self.db.close()
