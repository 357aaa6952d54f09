"""The subscribers store: its own SQLite database ([email] subscribers_db).

Tables `subscribers` (state pending / active / unsubscribed / bounced), `consent` (every
request and its confirmation), `suppressions` (hashes of erased addresses) and `sent_marks` (one
row per email campaign: which ledger records it, and whether it finished — what was sent must
survive the loss of the ledger, see publisher/transports/email.py). The rules are
described in publisher/subscribers.py; this module holds their SQL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from publisher.errors import PublisherError
from publisher.stores.base import DatabaseError, Store, now_iso
from publisher.stores.schema import open_part

SCHEMA = """
CREATE TABLE IF NOT EXISTS subscribers (
    id          INTEGER PRIMARY KEY,
    email       TEXT NOT NULL UNIQUE COLLATE NOCASE,
    name        TEXT NOT NULL DEFAULT '',
    tags        TEXT NOT NULL DEFAULT '',
    state       TEXT NOT NULL DEFAULT 'active'
                CHECK (state IN ('pending', 'active', 'unsubscribed', 'bounced')),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS subscribers_state ON subscribers (state, id);
CREATE TABLE IF NOT EXISTS consent (
    id            INTEGER PRIMARY KEY,
    email         TEXT NOT NULL COLLATE NOCASE,
    source        TEXT NOT NULL CHECK (source IN ('form', 'import', 'api')),
    ip            TEXT NOT NULL DEFAULT '',
    requested_at  TEXT NOT NULL,
    confirmed_at  TEXT
);
CREATE INDEX IF NOT EXISTS consent_email ON consent (email);
CREATE TABLE IF NOT EXISTS sent_marks (
    issue       TEXT PRIMARY KEY,
    ledger_id   TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('sending', 'done')),
    started_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS suppressions (
    hash        TEXT PRIMARY KEY,
    reason      TEXT NOT NULL,
    created_at  TEXT NOT NULL
) WITHOUT ROWID;
"""

STATES = ("pending", "active", "unsubscribed", "bounced")


class SubscriberError(PublisherError):
    """A subscriber file or command could not be processed."""


def address_hash(email: str) -> str:
    """The one trace `forget` keeps: SHA-256 of the lowercased address (a pseudonym, not a secret:
    whoever already knows an address can recognise it, nobody can read one out of it)."""
    return hashlib.sha256(b"publisher-suppression\0" + email.strip().lower().encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CampaignMark:
    """What the subscribers database knows of an email campaign."""

    issue: str
    ledger_id: str
    state: str  # sending | done
    started_at: str
    updated_at: str


@dataclass(frozen=True)
class Subscriber:
    id: int
    email: str
    name: str
    tags: str
    state: str


class SubscriberDB(Store):
    """The subscribers database; one connection per thread."""

    schema = SCHEMA
    part = "subscribers"

    def create(self) -> None:
        open_part(self)  # create the versioned part, or check its version

    # -- writes ----------------------------------------------------------------------------

    def add_many(self, rows: list[tuple[str, ...]], *, source: str = "import", ip: str = "") -> set[str]:
        """Insert or update (email, name, tags[, state]) — active unless a state is given. An
        existing subscriber keeps its state, unless the row stops mail to it (unsubscribed,
        bounced): nothing here makes an address active again. Addresses in `suppressions`
        (forgotten) are not added: they are returned."""
        now = now_iso()
        rows = [(r[0], r[1], r[2], r[3] if len(r) > 3 else "active") for r in rows]
        with self.transaction() as conn:
            hashes = {address_hash(r[0]): r[0] for r in rows}
            suppressed: set[str] = set()
            keys = list(hashes)
            for i in range(0, len(keys), 500):
                part = keys[i:i + 500]
                for (h,) in conn.execute(
                        f"SELECT hash FROM suppressions WHERE hash IN ({','.join('?' * len(part))})", part):
                    suppressed.add(hashes[h])
            keep = [r for r in rows if r[0] not in suppressed]
            conn.executemany(
                """INSERT INTO subscribers (email, name, tags, state, created_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT (email) DO UPDATE SET name = excluded.name, tags = excluded.tags,
                     state = CASE WHEN excluded.state IN ('unsubscribed', 'bounced') THEN excluded.state
                                  ELSE subscribers.state END,
                     updated_at = excluded.updated_at""",
                [(e, n, t, st, now, now) for e, n, t, st in keep],
            )
            conn.executemany(
                """INSERT INTO consent (email, source, ip, requested_at, confirmed_at)
                   SELECT ?, ?, ?, ?, NULL WHERE NOT EXISTS (SELECT 1 FROM consent WHERE email = ?)""",
                [(r[0], source, ip, now, r[0]) for r in keep],
            )
        return suppressed

    def request(self, email: str, ip: str) -> int | None:
        """A subscription asked for through the form: the address becomes `pending` (a new one, or
        an unsubscribed or bounced one asking again: still not mailed until confirmed), and the
        request is recorded in `consent`. Its number (the consent row) when a confirmation email
        should be sent; None when the address is already active."""
        now = now_iso()
        with self.transaction() as conn:
            row = conn.execute("SELECT state FROM subscribers WHERE email = ?", (email,)).fetchone()
            if row is not None and row[0] == "active":
                return None
            if row is None:
                conn.execute("INSERT INTO subscribers (email, state, created_at, updated_at) "
                             "VALUES (?, 'pending', ?, ?)", (email, now, now))
            elif row[0] != "pending":
                conn.execute("UPDATE subscribers SET state = 'pending', updated_at = ? WHERE email = ?",
                             (now, email))
            return conn.execute("INSERT INTO consent (email, source, ip, requested_at) VALUES (?, 'form', ?, ?) "
                                "RETURNING id", (email, ip, now)).fetchone()[0]

    _PENDING_REQUEST = """
        SELECT 1 FROM subscribers s JOIN consent c ON c.email = s.email
         WHERE s.email = ? AND s.state = 'pending' AND c.id = ? AND c.source = 'form'
           AND c.confirmed_at IS NULL
           AND c.id = (SELECT MAX(id) FROM consent WHERE email = s.email)"""

    def can_confirm(self, email: str, request: int) -> bool:
        """Whether form request `request` may still confirm `email`: the address is `pending`
        from that very request (its latest consent record, unconfirmed). A used link, one that a
        newer request replaced, and one for an address that was unsubscribed, bounced, imported
        or erased since all answer False."""
        return self.connect().execute(self._PENDING_REQUEST, (email, request)).fetchone() is not None

    def confirm(self, email: str, request: int, ip: str) -> bool:
        """The subscriber followed the link of form request `request` and pressed the button:
        `active`, the request marked confirmed (so the link is spent). False, changing nothing,
        unless `can_confirm` holds at that moment."""
        now = now_iso()
        with self.transaction() as conn:
            if conn.execute(self._PENDING_REQUEST, (email, request)).fetchone() is None:
                return False
            conn.execute("UPDATE subscribers SET state = 'active', updated_at = ? WHERE email = ?", (now, email))
            conn.execute("UPDATE consent SET confirmed_at = ?, ip = CASE WHEN ip = '' THEN ? ELSE ip END "
                         "WHERE id = ?", (now, ip, request))
            conn.execute("DELETE FROM suppressions WHERE hash = ?", (address_hash(email),))
        return True

    def forget(self, email: str) -> bool:
        """Erase the person: the row and the consent records go (overwritten on disk), a hash of
        the address stays in `suppressions`. True when there was anything to erase."""
        self.secure_delete()
        with self.transaction() as c:
            n = c.execute("DELETE FROM subscribers WHERE email = ?", (email,)).rowcount
            n += c.execute("DELETE FROM consent WHERE email = ?", (email,)).rowcount
            c.execute("INSERT INTO suppressions (hash, reason, created_at) VALUES (?, 'forget', ?) "
                      "ON CONFLICT (hash) DO NOTHING", (address_hash(email), now_iso()))
        scrub(self, "subscribers", "consent")
        return n > 0

    def imported(self) -> None:
        """After a list was imported at once: the plans of what follows fit its new size
        (Store.analyze)."""
        self.analyze("subscribers", "consent")

    def consents(self, email: str) -> list:
        return self.connect().execute("SELECT source, ip, requested_at, confirmed_at FROM consent "
                                      "WHERE email = ? ORDER BY id", (email,)).fetchall()

    def is_suppressed(self, email: str) -> bool:
        return self.connect().execute("SELECT 1 FROM suppressions WHERE hash = ?",
                                      (address_hash(email),)).fetchone() is not None

    def set_state(self, email: str, state: str, *, only_from: tuple[str, ...] = ()) -> bool:
        """Change a subscriber's state; True when a row changed."""
        if state not in STATES:
            raise ValueError(state)
        sql = "UPDATE subscribers SET state = ?, updated_at = ? WHERE email = ?"
        args: list = [state, now_iso(), email]
        if only_from:
            sql += f" AND state IN ({','.join('?' * len(only_from))})"
            args += list(only_from)
        cur = self.connect().execute(sql, args)
        return cur.rowcount > 0

    def delete(self, email: str) -> bool:
        return self.connect().execute("DELETE FROM subscribers WHERE email = ?", (email,)).rowcount > 0

    # -- campaigns --------------------------------------------------------------------------

    def mark_campaign(self, issue: str, ledger_id: str, state: str) -> None:
        """Record that `issue` is being sent (state sending) or was sent (done) through the ledger
        `ledger_id` (one row per issue)."""
        now = now_iso()
        self.connect().execute(
            """INSERT INTO sent_marks (issue, ledger_id, state, started_at, updated_at) VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (issue) DO UPDATE SET ledger_id = excluded.ledger_id, state = excluded.state,
                 updated_at = excluded.updated_at""",
            (issue, ledger_id, state, now, now))

    def campaign(self, issue: str) -> CampaignMark | None:
        row = self.connect().execute("SELECT issue, ledger_id, state, started_at, updated_at FROM sent_marks "
                                     "WHERE issue = ?", (issue,)).fetchone()
        return CampaignMark(*row) if row else None

    def campaigns(self) -> list[CampaignMark]:
        return [CampaignMark(*r) for r in self.connect().execute(
            "SELECT issue, ledger_id, state, started_at, updated_at FROM sent_marks ORDER BY issue DESC")]

    # -- reads -----------------------------------------------------------------------------

    def get(self, email: str) -> Subscriber | None:
        row = self.connect().execute("SELECT * FROM subscribers WHERE email = ?", (email,)).fetchone()
        return _sub(row) if row else None

    def count(self, state: str | None = "active") -> int:
        if state is None:
            return self.connect().execute("SELECT COUNT(*) FROM subscribers").fetchone()[0]
        return self.connect().execute("SELECT COUNT(*) FROM subscribers WHERE state = ?", (state,)).fetchone()[0]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        for row in self.connect().execute("SELECT state, COUNT(*) FROM subscribers GROUP BY state"):
            out[row[0]] = row[1]
        return out

    def iter_pages(self, state: str | None = "active", page: int = 1000) -> Iterator[list[Subscriber]]:
        """Subscribers in id order, one page (a short query) at a time."""
        last = 0
        conn = self.connect()
        where = "state = ? AND " if state else ""
        while True:
            args = ([state] if state else []) + [last, page]
            rows = conn.execute(
                f"SELECT id, email, name, tags, state FROM subscribers WHERE {where}id > ? ORDER BY id LIMIT ?",
                args,
            ).fetchall()
            if not rows:
                return
            yield [_sub(r) for r in rows]
            last = rows[-1]["id"]

    def iter(self, state: str | None = "active", page: int = 1000) -> Iterator[Subscriber]:
        for batch in self.iter_pages(state, page):
            yield from batch

    def email_of(self, sub_id: int) -> str | None:
        """The address of subscriber `sub_id` (a VERP bounce names the id), None when gone."""
        row = self.connect().execute("SELECT email FROM subscribers WHERE id = ?", (sub_id,)).fetchone()
        return row[0] if row is not None else None

    def times(self, sub_id: int) -> tuple[str, str]:
        """(created_at, updated_at) of subscriber `sub_id`."""
        row = self.connect().execute("SELECT created_at, updated_at FROM subscribers WHERE id = ?",
                                     (sub_id,)).fetchone()
        return row[0], row[1]

    def is_active(self, email: str) -> bool:
        row = self.connect().execute("SELECT state FROM subscribers WHERE email = ?", (email,)).fetchone()
        return bool(row) and row[0] == "active"

    def active_among(self, emails: list[str]) -> list[Subscriber]:
        """Those of `emails` (one page) who are active subscribers now."""
        if not emails:
            return []
        marks = ",".join("?" * len(emails))
        # looked up by address alone, filtered and ordered here: with the state or an ORDER BY id in
        # the query, PostgreSQL's cached plan walked every active subscriber for the few asked
        # (16 ms a page at 6,000 subscribers)
        rows = self.connect().execute(f"SELECT id, email, name, tags, state FROM subscribers WHERE email IN ({marks})",
                                      emails)
        return sorted((_sub(r) for r in rows if r[4] == "active"), key=lambda s: s.id)


def scrub(db: Store, *tables: str) -> None:
    """After a secure delete: no stale copies of the erased rows (Store.scrub)."""
    try:
        db.scrub(*tables)
    except DatabaseError as exc:
        raise SubscriberError(str(exc)) from None


def _sub(row) -> Subscriber:
    return Subscriber(row["id"], row["email"], row["name"], row["tags"], row["state"])
