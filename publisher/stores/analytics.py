"""The analytics store, on the ledger: what the campaign report counts, and the report's reads.

    click_links   (issue, number, url): the links an issue was sent with (recorded on push, before
                  the transport sends; a link edited and sent again adds a row, so old and new
                  messages both resolve to what they were signed for), with the anchor text
    clicks        (issue, number, url, day) → count: genuine redirects followed, per UTC day
    unsubscribes  (issue, day) → count: unsubscribes through `publisher serve`, each attributed
                  to the last issue sent to that address (the address itself is not stored here)

No table holds a reader's address, IP, user agent or time of a click: only counts. The report's
other numbers are read from the tables their owners write (email_sends and mail_events:
stores/mail.py; pushes: stores/ledger.py; wechat_drafts: stores/wechat.py; subscribers and
consent: stores/subscribers.py) — read only, never created here.

The same SQL on both backends (publisher/stores/base.py): upserts are `INSERT … ON CONFLICT …
DO UPDATE`/`DO NOTHING`, which add one to a count atomically on SQLite and on PostgreSQL alike, so
several `publisher serve` processes counting clicks on one shared database lose no count; which
tables exist is asked of the store (`Store.tables()`), never of a SQLite catalogue.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable

from publisher.stores.base import Store, db_errors, now_iso

SCHEMA = """
CREATE TABLE IF NOT EXISTS click_links (
    issue       TEXT NOT NULL,
    number      INTEGER NOT NULL,
    url         TEXT NOT NULL,
    label       TEXT NOT NULL DEFAULT '',
    channel     TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (issue, number, url)
);
CREATE TABLE IF NOT EXISTS clicks (
    issue       TEXT NOT NULL,
    number      INTEGER NOT NULL,
    url         TEXT NOT NULL,
    day         TEXT NOT NULL,
    count       INTEGER NOT NULL,
    PRIMARY KEY (issue, number, url, day)
);
CREATE TABLE IF NOT EXISTS unsubscribes (
    issue       TEXT NOT NULL,
    day         TEXT NOT NULL,
    count       INTEGER NOT NULL,
    PRIMARY KEY (issue, day)
);
"""

MAX_CACHED = 10_000  # (issue, number) pairs whose URLs a redirect server keeps in memory


def today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


class AnalyticsStore:
    """click_links, clicks and unsubscribes in the ledger `db` (created when opened)."""

    def __init__(self, db: Store):
        self.db = db
        self.write_lock = threading.Lock()  # one writer in this process (no busy-handler sleeps)
        self._writer = None
        self._links: dict[tuple[str, int], tuple[str, ...]] = {}
        db.ensure(SCHEMA)

    def _write(self, sql: str, args: tuple) -> None:
        """One counting statement on this process's writer connection. A connection the
        PostgreSQL server dropped (a restart while `serve` was idle) is found out by the statement
        that fails on it — which never reached the new server — so it is run once more on a new
        connection, and the click is not lost."""
        with self.write_lock:
            for attempt in (1, 2):
                if self._writer is not None and getattr(self._writer, "broken", False):
                    self._writer.close()
                    self._writer = None
                if self._writer is None:
                    self._writer = self.db.open()
                try:
                    self._writer.execute(sql, args)
                    return
                except db_errors():
                    if attempt == 2 or not getattr(self._writer, "broken", False):
                        raise

    def _read(self, sql: str, args: tuple):
        """All rows of a query on this thread's connection, asked again once on a new connection
        when the server dropped the old one (Store.connect opens a new one)."""
        conn = self.db.connect()
        try:
            return conn.execute(sql, args).fetchall()
        except db_errors():
            if not getattr(conn, "broken", False):
                raise
            return self.db.connect().execute(sql, args).fetchall()

    def close(self) -> None:
        with self.write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    # -- links and clicks ----------------------------------------------------------------------

    def record_links(self, issue: str, channel: str, links: Iterable[tuple[int, str, str]]) -> None:
        """The links `issue` is sent with (one transaction; a row already there is kept)."""
        now = now_iso()
        with self.db.transaction() as c:
            c.executemany("INSERT INTO click_links (issue, number, url, label, channel, created_at) "
                          "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (issue, number, url) DO NOTHING",
                          [(issue, n, url, label, channel, now) for n, url, label in links])

    def urls(self, issue: str, number: int, *, fresh: bool = False) -> tuple[str, ...]:
        """The URLs recorded as link `number` of `issue` (cached: rows are never changed, but one
        may be added — `fresh` reads them again)."""
        key = (issue, number)
        got = None if fresh else self._links.get(key)
        if got is None:
            got = tuple(r[0] for r in self._read(
                "SELECT url FROM click_links WHERE issue = ? AND number = ? ORDER BY created_at, url",
                (issue, number)))
            if got and (key in self._links or len(self._links) < MAX_CACHED):
                self._links[key] = got
        return got

    def count_click(self, issue: str, number: int, url: str, day: str | None = None) -> None:
        self._write("INSERT INTO clicks (issue, number, url, day, count) VALUES (?, ?, ?, ?, 1) "
                    "ON CONFLICT (issue, number, url, day) DO UPDATE SET count = clicks.count + 1",
                    (issue, number, url, day or today()))

    def count_unsubscribe(self, issue: str, day: str | None = None) -> None:
        self._write("INSERT INTO unsubscribes (issue, day, count) VALUES (?, ?, 1) "
                    "ON CONFLICT (issue, day) DO UPDATE SET count = unsubscribes.count + 1",
                    (issue, day or today()))

    # -- the report's reads ------------------------------------------------------------------------

    def links_of(self, issue: str) -> list[dict]:
        """Every recorded link of `issue` with its clicks: number, url, label, channel, clicks."""
        rows = self.db.connect().execute(
            """SELECT l.number, l.url, l.label, l.channel,
                      COALESCE((SELECT SUM(c.count) FROM clicks c WHERE c.issue = l.issue
                                AND c.number = l.number AND c.url = l.url), 0) AS clicks
               FROM click_links l WHERE l.issue = ? ORDER BY l.number, l.created_at""", (issue,))
        return [dict(r) for r in rows]

    def first_issues(self, emails: list[str]) -> dict[str, str]:
        """The first issue each of `emails` was addressed (lowercased address → issue). One pass
        over email_sends (keyed by issue, not address: a lookup per address would be a scan each)."""
        wanted = {e.lower() for e in emails}
        if not wanted or "email_sends" not in self.db.tables():
            return {}
        conn = self.db.connect()
        return {e: issue for e, issue in conn.execute(
            "SELECT lower(email), MIN(issue) FROM email_sends GROUP BY lower(email)") if e in wanted}

    def clicks_by_day(self, issue: str) -> dict[str, int]:
        return {r[0]: r[1] for r in self.db.connect().execute(
            "SELECT day, SUM(count) FROM clicks WHERE issue = ? GROUP BY day ORDER BY day", (issue,))}

    def unsubscribed(self, issue: str) -> int:
        return ReportReads(self.db).unsubscribed(issue)


class ReportReads:
    """The report's read-only queries over the tables other stores own (absent tables read as
    empty: a ledger that never sent email has no email_sends)."""

    def __init__(self, db: Store):
        self.conn = db.connect()
        self.present = db.tables()

    def issues(self) -> list[str]:
        """Every issue the ledger knows, newest first."""
        found: set[str] = set()
        for table in ("pushes", "email_sends", "click_links"):
            if table in self.present:
                found.update(r[0] for r in self.conn.execute(f"SELECT DISTINCT issue FROM {table}"))
        return sorted(found, reverse=True)

    def pushes(self, issue: str) -> list[dict]:
        if "pushes" not in self.present:
            return []
        return [dict(r) for r in self.conn.execute(
            "SELECT channel, state, attempts, remote_id, url, created_at, updated_at FROM pushes "
            "WHERE issue = ? ORDER BY channel", (issue,))]

    def sends(self, issue: str) -> dict[str, int]:
        """Recipients of `issue` by email_sends state."""
        if "email_sends" not in self.present:
            return {}
        return {r[0]: r[1] for r in self.conn.execute(
            "SELECT state, COUNT(*) FROM email_sends WHERE issue = ? GROUP BY state", (issue,))}

    def send_span(self, issue: str) -> tuple[str | None, str | None]:
        """(first, last) time a recipient of `issue` was recorded in a final state."""
        if "email_sends" not in self.present:
            return None, None
        row = self.conn.execute("SELECT MIN(updated_at), MAX(updated_at) FROM email_sends WHERE issue = ? "
                                "AND state IN ('sent', 'failed', 'ambiguous')", (issue,)).fetchone()
        return row[0], row[1]

    def events(self, issue: str) -> dict[str, int]:
        """Distinct addresses of `issue` by bounce/complaint kind (hard, soft, complaint)."""
        if "mail_events" not in self.present:
            return {}
        return {r[0]: r[1] for r in self.conn.execute(
            "SELECT kind, COUNT(DISTINCT COALESCE(email, key)) FROM mail_events WHERE issue = ? "
            "AND kind IN ('hard', 'soft', 'complaint') GROUP BY kind", (issue,))}

    def unsubscribed(self, issue: str) -> int:
        """Unsubscribes through `publisher serve` counted for `issue`."""
        if "unsubscribes" not in self.present:
            return 0
        row = self.conn.execute("SELECT SUM(count) FROM unsubscribes WHERE issue = ?", (issue,)).fetchone()
        return int(row[0] or 0)

    def wechat(self, issue: str) -> dict | None:
        if "wechat_drafts" not in self.present:
            return None
        row = self.conn.execute("SELECT media_id, publish_id, publish_status, article_url, updated_at "
                                "FROM wechat_drafts WHERE issue = ? ORDER BY updated_at DESC LIMIT 1",
                                (issue,)).fetchone()
        return dict(row) if row else None


def confirmed_addresses(subscribers: Store) -> list[str]:
    """The addresses that confirmed a subscription through the form (the subscribers database's
    consent rows; each once)."""
    if "consent" not in subscribers.tables():
        return []
    conn = subscribers.connect()
    return [r[0] for r in conn.execute(
        "SELECT DISTINCT lower(email) FROM consent WHERE source = 'form' AND confirmed_at IS NOT NULL")]


def list_counts(subscribers: Store) -> dict[str, int]:
    if "subscribers" not in subscribers.tables():
        return {}
    conn = subscribers.connect()
    return {r[0]: r[1] for r in conn.execute("SELECT state, COUNT(*) FROM subscribers GROUP BY state")}
