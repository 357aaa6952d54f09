"""Campaigns any number of senders share (issue 22), on the ledger.

`campaigns`: one row per issue sent by email — its state (running / done) and the message
template every worker sends (JSON, so a worker on another host needs only the database and the
SMTP settings). At campaign start the recipients are written once as `email_sends` rows in state
`pending` (publisher/stores/mail.py), with their Message-ID, in the same transaction as the
campaign row.

`campaign_workers`: one row per running sender (token, host, pid, command, heartbeat);
`email_claims`: which worker holds which recipient. A worker claims a batch of `pending` rows
that nobody live holds — on PostgreSQL with `SELECT … FOR UPDATE SKIP LOCKED` (concurrent
claimers take disjoint batches without waiting), on SQLite under its single-writer lock — sends
them, and commits each outcome on the row (pending → sending → sent | failed, `mark`). A worker is
dead when its heartbeat is older than CLAIM_STALE, or at once when it ran on this host and its
process is gone (a pid means nothing on another host). The rows a dead worker left in `sending`
are its in-flight messages — the ambiguous window — and are settled by the [email] ambiguous
policy (resend: back to pending; skip: ambiguous); its other claims are simply free again.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import threading
import time
from base64 import b64decode, b64encode
from collections.abc import Iterable
from typing import Any

from publisher.stores.base import DatabaseError, Store, db_errors, now_iso

SCHEMA = """
CREATE TABLE IF NOT EXISTS campaigns (
    issue       TEXT PRIMARY KEY,
    state       TEXT NOT NULL CHECK (state IN ('running', 'done')),
    template    TEXT NOT NULL,
    recipients  INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS campaign_workers (
    token       TEXT PRIMARY KEY,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    proc_start  TEXT NOT NULL,
    command     TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    heartbeat   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS email_claims (
    issue       TEXT NOT NULL,
    email       TEXT NOT NULL,
    worker      TEXT NOT NULL,
    PRIMARY KEY (issue, email)
);
CREATE INDEX IF NOT EXISTS email_claims_worker ON email_claims (worker);
CREATE INDEX IF NOT EXISTS email_sends_open ON email_sends (issue, email) WHERE state IN ('pending', 'sending');
"""
# email_sends_open: a claim finds the next pending rows without walking the sent ones

WORKER_BEAT = 5.0  # seconds between a worker's heartbeats
CLAIM_STALE = 60.0  # a worker silent this long is dead (any host): its claims are free again


def encode_template(fields: dict[str, Any]) -> str:
    """A message template's fields as JSON (bytes as base64): what every worker sends."""
    def enc(v):
        if isinstance(v, bytes):
            return {"b64": b64encode(v).decode("ascii")}
        if isinstance(v, tuple | list):
            return [enc(x) for x in v]
        return v
    return json.dumps({k: enc(v) for k, v in fields.items()}, ensure_ascii=False)


def decode_template(text: str) -> dict[str, Any]:
    def dec(v):
        if isinstance(v, dict) and set(v) == {"b64"}:
            return b64decode(v["b64"])
        if isinstance(v, list):
            return tuple(dec(x) for x in v)
        return v
    return {k: dec(v) for k, v in json.loads(text).items()}


class CampaignStore:
    """The campaign tables of the ledger `db` (created when opened; email_sends must exist)."""

    def __init__(self, db: Store):
        from publisher.stores.mail import MailStore

        self.db = db
        MailStore(db)  # email_sends, which the index above covers
        db.ensure(SCHEMA)

    # -- campaigns -----------------------------------------------------------------------------

    def start(self, issue: str, template: str, recipients: Iterable[list[tuple[str, str]]]) -> bool:
        """Write the campaign and its recipients — pages of (email, message_id) — once, in one
        transaction. False (nothing written) when the campaign already exists: join it."""
        now = now_iso()
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM campaigns WHERE issue = ?", (issue,)).fetchone():
                return False
            n = 0
            for page in recipients:
                conn.executemany(
                    "INSERT INTO email_sends (issue, email, state, attempts, message_id, updated_at) "
                    "VALUES (?, ?, 'pending', 0, ?, ?) ON CONFLICT (issue, email) DO NOTHING",
                    [(issue, e, mid, now) for e, mid in page])
                n += len(page)
            conn.execute("INSERT INTO campaigns (issue, state, template, recipients, created_at, updated_at) "
                         "VALUES (?, 'running', ?, ?, ?, ?)", (issue, template, n, now, now))
        self.db.analyze("email_sends")  # the senders' lookups by key stay lookups by key
        return True

    def get(self, issue: str) -> dict | None:
        row = self.db.connect().execute("SELECT issue, state, template, recipients FROM campaigns "
                                        "WHERE issue = ?", (issue,)).fetchone()
        return dict(row) if row else None

    def running(self) -> list[str]:
        return [r[0] for r in self.db.connect().execute(
            "SELECT issue FROM campaigns WHERE state = 'running' ORDER BY issue")]

    def finish_if_done(self, issue: str) -> bool:
        """Mark the campaign done when no recipient is pending or in flight; True if it is done."""
        with self.db.transaction() as conn:
            left = conn.execute("SELECT COUNT(*) FROM email_sends WHERE issue = ? AND state IN "
                                "('pending', 'sending')", (issue,)).fetchone()[0]
            if left:
                return False
            conn.execute("UPDATE campaigns SET state = 'done', updated_at = ? WHERE issue = ?",
                         (now_iso(), issue))
        return True

    def open_rows(self, issue: str) -> int:
        return self.db.connect().execute("SELECT COUNT(*) FROM email_sends WHERE issue = ? AND state IN "
                                         "('pending', 'sending')", (issue,)).fetchone()[0]

    # -- workers ---------------------------------------------------------------------------------

    def join(self, command: str | None = None) -> Worker:
        from publisher.stores.ledger import _HOST, _proc_start

        token = secrets.token_hex(16)
        pid = os.getpid()
        command = command or " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv[:4]))
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO campaign_workers (token, host, pid, proc_start, command, started_at, "
                         "heartbeat) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (token, _HOST, pid, _proc_start(pid), command[:200], now_iso(), time.time()))
        return Worker(self, token)

    def workers(self) -> list[dict]:
        return [dict(r) for r in self.db.connect().execute("SELECT * FROM campaign_workers ORDER BY started_at")]

    def _dead(self, conn) -> list[str]:
        """Tokens of the workers that are gone (stale heartbeat, or a dead process on this host)."""
        from publisher.stores.ledger import _HOST, _alive

        now = time.time()
        dead = []
        for row in conn.execute("SELECT token, host, pid, proc_start, heartbeat FROM campaign_workers"):
            if now - float(row["heartbeat"]) > CLAIM_STALE or (
                    row["host"] == _HOST and not _alive(row["pid"], row["proc_start"])):
                dead.append(row["token"])
        return dead

    def reap(self, issue: str, policy: str) -> list[str]:
        """Free the claims of dead workers; their rows left in `sending` (in flight when they died)
        become `pending` (policy resend) or `ambiguous` (skip). Returns those in-flight addresses."""
        with self.db.transaction() as conn:
            dead = self._dead(conn)
            if not dead:
                return []
            marks = ",".join("?" * len(dead))
            flight = [r[0] for r in conn.execute(
                f"SELECT s.email FROM email_sends s JOIN email_claims c ON c.issue = s.issue AND c.email = s.email "
                f"WHERE s.issue = ? AND s.state = 'sending' AND c.worker IN ({marks})", (issue, *dead))]
            new = "pending" if policy == "resend" else "ambiguous"
            conn.executemany("UPDATE email_sends SET state = ?, last_error = 'in flight when its worker died', "
                             "updated_at = ? WHERE issue = ? AND email = ? AND state = 'sending'",
                             [(new, now_iso(), issue, e) for e in flight])
            conn.execute(f"DELETE FROM email_claims WHERE worker IN ({marks})", dead)
            conn.execute(f"DELETE FROM campaign_workers WHERE token IN ({marks})", dead)
        return flight


class Worker:
    """A joined sender: claims batches, renews its heartbeat from a daemon thread until `leave`."""

    def __init__(self, store: CampaignStore, token: str):
        self.store, self.token = store, token
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="campaign-worker-beat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        db = self.store.db.same()
        try:
            while not self._stop.wait(WORKER_BEAT):
                try:
                    cur = db.connect().execute("UPDATE campaign_workers SET heartbeat = ? WHERE token = ?",
                                               (time.time(), self.token))
                except (*db_errors(), DatabaseError):
                    continue  # busy, or the server is restarting: the next beat tries again
                if cur.rowcount == 0:  # reaped: our claims were given to others
                    self.lost.set()
                    return
        finally:
            db.close()

    def claim(self, issue: str, n: int) -> list[str]:
        """Up to `n` pending recipients of `issue` that no live worker holds, now ours."""
        db = self.store.db
        # PostgreSQL: concurrent claimers skip each other's locked rows instead of waiting, and the
        # claims' primary key settles the rest (ON CONFLICT DO NOTHING: only what we inserted is
        # ours); SQLite: BEGIN IMMEDIATE, one claimer at a time.
        # The cost of a claim must not grow with what was sent: the rows are read in order from
        # the partial index of open rows (email_sends_open) and each is looked up in the claims by
        # its primary key, stopping at the limit. (A LEFT JOIN … IS NULL let PostgreSQL hash every
        # claim and sort every pending row: 140 ms a claim at 100,000 recipients. A NOT EXISTS
        # became an anti-join whose plan, made once for the prepared statement while the claims
        # were few, scanned every claim for every row: 80 ms a claim at 3,000. The scalar
        # subquery cannot become a join: it is always one primary-key lookup a row. SQLite does
        # not see that state = 'pending' implies the index's predicate, so it is named there.)
        sql = ("INSERT INTO email_claims (issue, email, worker) SELECT s.issue, s.email, ? FROM email_sends s"
               + ("" if db.url else " INDEXED BY email_sends_open") +
               " WHERE s.issue = ? AND s.state IN ('pending', 'sending') AND s.state = 'pending' AND "
               "(SELECT 1 FROM email_claims c WHERE c.issue = s.issue AND c.email = s.email) IS NULL "
               "ORDER BY s.email LIMIT ?" + (" FOR UPDATE OF s SKIP LOCKED" if db.url else "") +
               " ON CONFLICT (issue, email) DO NOTHING RETURNING email")
        with db.transaction(lock=not db.url) as conn:
            emails = sorted(r[0] for r in conn.execute(sql, (self.token, issue, n)))
        return emails

    def release(self, issue: str) -> None:
        """Give back our claims on rows still pending (deferred): another worker may try them."""
        with self.store.db.transaction() as conn:
            # our claims, each looked up in email_sends by its key (a scalar subquery: never a join
            # that walks the campaign's pending rows, whatever the cached plan thinks of their number)
            conn.execute("DELETE FROM email_claims WHERE worker = ? AND issue = ? AND (SELECT s.state FROM "
                         "email_sends s WHERE s.issue = email_claims.issue AND s.email = email_claims.email) "
                         "= 'pending'", (self.token, issue))

    def drop(self, issue: str, emails: list[str]) -> None:
        """These claimed recipients are no longer subscribed: they leave the campaign."""
        with self.store.db.transaction() as conn:
            conn.executemany("DELETE FROM email_sends WHERE issue = ? AND email = ? AND state = 'pending'",
                             [(issue, e) for e in emails])
            conn.executemany("DELETE FROM email_claims WHERE issue = ? AND email = ?",
                             [(issue, e) for e in emails])

    def settle(self, issue: str, policy: str) -> list[str]:
        """After a run of ours ended (its threads joined): our rows still in `sending` were
        interrupted (the database went away between the dot and the commit) — the ambiguous
        window — and follow the policy. Returns those addresses."""
        new = "pending" if policy == "resend" else "ambiguous"
        with self.store.db.transaction() as conn:
            rows = [r[0] for r in conn.execute(
                "SELECT s.email FROM email_sends s JOIN email_claims c ON c.issue = s.issue AND "
                "c.email = s.email WHERE s.issue = ? AND s.state = 'sending' AND c.worker = ?",
                (issue, self.token))]
            conn.executemany("UPDATE email_sends SET state = ?, last_error = 'interrupted in the ambiguous "
                             "window', updated_at = ? WHERE issue = ? AND email = ? AND state = 'sending'",
                             [(new, now_iso(), issue, e) for e in rows])
        return rows

    def leave(self, policy: str = "resend") -> None:
        """Stop beating and give everything back; a row of ours still in `sending` (a stop in the
        ambiguous window) follows the policy first, as a dead worker's would."""
        self._stop.set()
        self._thread.join()
        with self.store.db.transaction() as conn:
            conn.execute("UPDATE email_sends SET state = ?, last_error = 'interrupted in the ambiguous window', "
                         "updated_at = ? WHERE state = 'sending' AND EXISTS (SELECT 1 FROM email_claims c WHERE "
                         "c.worker = ? AND c.issue = email_sends.issue AND c.email = email_sends.email)",
                         ("pending" if policy == "resend" else "ambiguous", now_iso(), self.token))
            conn.execute("DELETE FROM email_claims WHERE worker = ?", (self.token,))
            conn.execute("DELETE FROM campaign_workers WHERE token = ?", (self.token,))
