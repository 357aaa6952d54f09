"""The versioned schema: `schema_version` holds one row per part of the state, and a database
whose version is not this program's is refused with the command to run.

Parts: `ledger` (pushes, leases, mail, WeChat, link cache, campaigns) and `subscribers`
(subscribers, consent, suppressions). With SQLite each part is its own file; on PostgreSQL both
share one database (and one schema_version table).

Opening a part (`open_part`, called by Ledger and SubscriberDB):
- a database that holds none of the part's tables is new: its tables are created at the current
  version;
- a database from before versioning (tables, no version row) is version 1;
- an older version is refused: "run `publisher db upgrade`"; a newer one (written by a newer
  publisher) is refused: "upgrade publisher".

`upgrade` applies MIGRATIONS[part][v] for each missing version v, each in one transaction with
its version row. Migrations are written per dialect; PostgreSQL installs start at the version
current when team mode arrived, so only later versions need a PostgreSQL step.
"""

from __future__ import annotations

from typing import Any

from publisher.stores.base import DatabaseError, Store, now_iso

VERSION_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (
    part        TEXT PRIMARY KEY,
    version     INTEGER NOT NULL,
    updated_at  TEXT NOT NULL
);
"""

# subscribers 2: consent rows get an explicit id (they were addressed by SQLite's rowid)
_SUBSCRIBERS_2_SQLITE = """
CREATE TABLE consent_new (
    id            INTEGER PRIMARY KEY,
    email         TEXT NOT NULL COLLATE NOCASE,
    source        TEXT NOT NULL CHECK (source IN ('form', 'import', 'api')),
    ip            TEXT NOT NULL DEFAULT '',
    requested_at  TEXT NOT NULL,
    confirmed_at  TEXT
);
INSERT INTO consent_new (id, email, source, ip, requested_at, confirmed_at)
  SELECT rowid, email, source, ip, requested_at, confirmed_at FROM consent ORDER BY rowid;
DROP TABLE consent;
ALTER TABLE consent_new RENAME TO consent;
CREATE INDEX IF NOT EXISTS consent_email ON consent (email);
"""



def _subscribers_2_sqlite(db: Store, conn) -> None:
    """Version 2 of a SQLite subscribers file: a database from before double opt-in gets the
    wider state CHECK, and consent rows get an explicit id."""
    old = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'subscribers'").fetchone()
    if old and "'pending'" not in old[0]:
        db.script(conn, _SUBSCRIBERS_WIDEN_SQLITE)
    if "consent" in db.tables():
        db.script(conn, _SUBSCRIBERS_2_SQLITE)


# (a migration keeps the schema of its time: never the live SCHEMA of a store, which moves on)
_SUBSCRIBERS_WIDEN_SQLITE = """
ALTER TABLE subscribers RENAME TO subscribers_old;
DROP INDEX IF EXISTS subscribers_state;
CREATE TABLE subscribers (
    id          INTEGER PRIMARY KEY,
    email       TEXT NOT NULL UNIQUE COLLATE NOCASE,
    name        TEXT NOT NULL DEFAULT '',
    tags        TEXT NOT NULL DEFAULT '',
    state       TEXT NOT NULL DEFAULT 'active'
                CHECK (state IN ('pending', 'active', 'unsubscribed', 'bounced')),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
INSERT INTO subscribers SELECT id, email, name, tags, state, created_at, updated_at FROM subscribers_old;
DROP TABLE subscribers_old;
CREATE INDEX IF NOT EXISTS subscribers_state ON subscribers (state, id);
"""

# ledger 2: mail_events gets the kind `unsubscribe` (a provider's unsubscribe, recorded until then as a
# `complaint` with evidence "unsubscribe: …", which the campaign report counted as spam complaints)
_LEDGER_2_KINDS = "('hard', 'soft', 'complaint', 'unsubscribe', 'ignored')"
_LEDGER_2_SQLITE = f"""
ALTER TABLE mail_events RENAME TO mail_events_old;
DROP INDEX IF EXISTS mail_events_email;
CREATE TABLE mail_events (
    key          TEXT PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN {_LEDGER_2_KINDS}),
    email        TEXT,
    issue        TEXT,
    status       TEXT,
    evidence     TEXT NOT NULL,
    action       TEXT NOT NULL,
    source       TEXT NOT NULL,
    processed_at TEXT NOT NULL
);
INSERT INTO mail_events SELECT * FROM mail_events_old;
DROP TABLE mail_events_old;
CREATE INDEX IF NOT EXISTS mail_events_email ON mail_events (email)
"""
_LEDGER_2_RELABEL = ("UPDATE mail_events SET kind = 'unsubscribe', evidence = substr(evidence, 14) "
                     "WHERE kind = 'complaint' AND evidence LIKE ?")


def _ledger_2(db: Store, conn) -> None:
    """Version 2 of the ledger (either dialect): the wider kind CHECK, and the provider
    unsubscribes recorded as complaints relabelled."""
    if "mail_events" not in db.tables():
        return  # created with the new CHECK when first opened
    if db.dialect == "sqlite":
        db.script(conn, _LEDGER_2_SQLITE)
    else:
        conn.execute("ALTER TABLE mail_events DROP CONSTRAINT IF EXISTS mail_events_kind_check")
        conn.execute(f"ALTER TABLE mail_events ADD CONSTRAINT mail_events_kind_check CHECK (kind IN {_LEDGER_2_KINDS})")
    conn.execute(_LEDGER_2_RELABEL, ("unsubscribe: %",))


#: part -> version -> dialect -> how to bring the part from version-1 to version (a SQL script
#: or a function of (store, connection)), run in one transaction with the version row
MIGRATIONS: dict[str, dict[int, dict[str, Any]]] = {
    "ledger": {2: {"sqlite": _ledger_2, "postgresql": _ledger_2}},
    "subscribers": {2: {"sqlite": _subscribers_2_sqlite}},
}
#: the tables that tell a part exists in a database
MARKERS = {"ledger": {"pushes"}, "subscribers": {"subscribers"}}


def current(part: str) -> int:
    return max(MIGRATIONS[part], default=1)


class SchemaError(DatabaseError):
    """The database's schema is not the version this program uses."""


def stored(db: Store, part: str) -> int | None:
    """The part's version in `db`; None when the part is not there at all."""
    db.ensure(VERSION_SCHEMA)
    row = db.connect().execute("SELECT version FROM schema_version WHERE part = ?", (part,)).fetchone()
    if row is not None:
        return int(row[0])
    return 1 if MARKERS[part] & db.tables() else None


def open_part(db: Store) -> None:
    """Create a new part at the current version, or check an existing one (SchemaError)."""
    part, want = db.part, current(db.part)
    db.ensure(VERSION_SCHEMA)
    with db.transaction() as conn:
        row = conn.execute("SELECT version FROM schema_version WHERE part = ?", (part,)).fetchone()
        if row is None and not MARKERS[part] & db.tables():
            db.script(conn, db.schema)
            conn.execute("INSERT INTO schema_version (part, version, updated_at) VALUES (?, ?, ?)",
                         (part, want, now_iso()))
            return
    have = int(row[0]) if row is not None else 1
    if have < want:
        raise SchemaError(f"the {part} database {db.where} has schema version {have}, this publisher needs "
                          f"{want}: run `publisher db upgrade` (back the database up first)")
    if have > want:
        raise SchemaError(f"the {part} database {db.where} has schema version {have}, newer than this "
                          f"publisher knows ({want}): upgrade publisher on this host")
    if row is None:  # a database from before versioning, already current: record it
        with db.transaction() as conn:
            conn.execute("INSERT INTO schema_version (part, version, updated_at) VALUES (?, ?, ?) "
                         "ON CONFLICT (part) DO NOTHING", (part, have, now_iso()))
    db.ensure(db.schema)  # tables added since (CREATE … IF NOT EXISTS)


def upgrade(db: Store, part: str, schema_sql: str) -> tuple[int | None, int]:
    """Bring `part` of `db` to the current version; (version before, version after). A missing
    part is created."""
    want = current(part)
    have = stored(db, part)
    if have is None:
        with db.transaction() as conn:
            db.script(conn, schema_sql)
            conn.execute("INSERT INTO schema_version (part, version, updated_at) VALUES (?, ?, ?)",
                         (part, want, now_iso()))
        return None, want
    if have > want:
        raise SchemaError(f"the {part} database {db.where} has schema version {have}, newer than this "
                          f"publisher knows ({want}): upgrade publisher on this host")
    for version in range(have + 1, want + 1):
        script = MIGRATIONS[part][version].get(db.dialect)
        with db.transaction() as conn:
            if callable(script):
                script(db, conn)
            elif script:
                db.script(conn, script)
            conn.execute("INSERT INTO schema_version (part, version, updated_at) VALUES (?, ?, ?) "
                         "ON CONFLICT (part) DO UPDATE SET version = excluded.version, "
                         "updated_at = excluded.updated_at", (part, version, now_iso()))
    db.ensure(schema_sql)
    return have, want

