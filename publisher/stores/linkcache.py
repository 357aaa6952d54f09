"""The link-check cache, on the ledger: one row per URL with the last definite answer."""

from __future__ import annotations

from collections.abc import Iterable

from publisher.stores.base import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS link_cache (
    url         TEXT PRIMARY KEY,
    status      INTEGER,
    ok          INTEGER NOT NULL,
    error       TEXT,
    final_url   TEXT,
    checked_at  REAL NOT NULL
);
"""


class LinkCache:
    def __init__(self, db: Store):
        self.db = db
        db.ensure(SCHEMA)

    def fresh(self, urls: list[str], checked_after: float) -> list[dict]:
        """The cached answers for `urls` checked at or after `checked_after` (url, status, ok,
        error, final_url), 500 URLs a query."""
        conn = self.db.connect()
        out: list[dict] = []
        for i in range(0, len(urls), 500):
            chunk = urls[i:i + 500]
            out += [dict(row) for row in conn.execute(
                f"SELECT * FROM link_cache WHERE checked_at >= ? AND url IN ({','.join('?' * len(chunk))})",
                (checked_after, *chunk),
            ).fetchall()]
        return out

    def put(self, rows: Iterable[tuple]) -> None:
        """Store (url, status, ok, error, final_url, checked_at) rows in one transaction."""
        with self.db.transaction() as conn:
            conn.executemany(
                """INSERT INTO link_cache (url, status, ok, error, final_url, checked_at)
                   VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT (url) DO UPDATE SET status = excluded.status, ok = excluded.ok,
                     error = excluded.error, final_url = excluded.final_url,
                     checked_at = excluded.checked_at""",
                rows,
            )
