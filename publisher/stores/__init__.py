"""Stores: every SQL statement of the program, one module per store.

    base         Store (the one connection layer: a SQLite file in WAL mode or PostgreSQL,
                 one connection per thread, serialized write transactions), now_iso
    schema       the versioned schema (schema_version; `publisher db upgrade`)
    copy         `publisher db copy`: a SQLite install into an empty PostgreSQL database
    campaigns    shared campaigns: campaigns, campaign_workers, email_claims
    ledger       pushes (one row per issue and channel) and leases (who is sending it now)
    mail         email_sends (one row per issue and recipient) and mail_events (bounces, complaints)
    subscribers  subscribers, consent, suppressions (their own database, [email] subscribers_db)
    wechat       WeChat access tokens, uploads, intents, drafts, remote images
    analytics    click_links, clicks and unsubscribes (counts for the campaign report), and the
                 report's read-only queries over the other stores' tables
    linkcache    the link-check cache
    jobs         the scheduler's job store (APScheduler's table, read only)

The stores on the ledger share its file and connection (`store.db` is the Ledger): a store
declares its tables once, as SCHEMA, and creates them when it is opened. Transports, the
subscribe form, bounce processing and the scheduler call store methods; they write no SQL.

Every store runs on a SQLite file or on a shared PostgreSQL database ([database] url): each
method is one short transaction (BEGIN IMMEDIATE there, a transaction-scoped advisory lock here),
upserts are `INSERT … ON CONFLICT`, and the few dialect differences are translated in base.py.
The lease is a row lease (`Ledger.acquire`: the (issue, channel) row of `leases`, then the holder
checks: dead on this host or heartbeat older than LEASE_STALE). The exactly-once commit points (a
send is `sending` before the final dot, `sent` after the 250 reply; a WeChat intent before each
non-idempotent call) are the transactions of these methods, one row each. `campaigns` lets any
number of workers share a campaign (claims with FOR UPDATE SKIP LOCKED); `schema` versions the
schema; `copy` moves a SQLite install to PostgreSQL. `location`, `open_ledger` and
`open_subscribers` below turn the settings into stores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def location(settings: Any, part: str) -> tuple[str | Path, str | None]:
    """(where, password) of a part of the state ('ledger' or 'subscribers'): the [database] url
    when set (both parts in one PostgreSQL database), else the part's SQLite file."""
    url = settings["database"]["url"]
    if url:
        if not url.startswith(("postgresql://", "postgres://")):
            from publisher.errors import ConfigError

            raise ConfigError(f"[database] url must be a postgresql://user@host:port/dbname URL (or empty "
                              f"for SQLite files), got {url[:40]!r}: fix it in {settings.where()}")
        password = settings.secret("database", "password_env") if settings["database"]["password_env"] else None
        return url, password
    if part == "ledger":
        return settings.require("paths", "ledger", "the ledger database"), None
    from publisher.registry import mail_channel

    return settings.require(mail_channel(), "subscribers_db", "the subscribers database"), None


def open_ledger(settings: Any, *, existing: bool = False):
    """The ledger of these settings; with `existing`, None when it is a SQLite file not created yet
    (readers that must not create one)."""
    from publisher.stores.ledger import Ledger

    where, password = location(settings, "ledger")
    if existing and "://" not in str(where) and not Path(where).exists():
        return None
    return Ledger(where, password=password)


def open_subscribers(settings: Any, *, existing: bool = False):
    """The subscribers database of these settings; with `existing`, None when it is a SQLite file
    not created yet, or none is configured (readers that must not create one); without, a
    SubscriberError naming the key to set when none is configured."""
    from publisher.registry import mail_channel
    from publisher.stores.subscribers import SubscriberDB, SubscriberError

    if not settings["database"]["url"]:
        table = mail_channel()
        path = settings.path(table, "subscribers_db")
        if path is None and not existing:
            raise SubscriberError(f"[{table}] subscribers_db is not set: set it in {settings.where()}")
        if existing and (path is None or not Path(path).exists()):
            return None
    where, password = location(settings, "subscribers")
    return SubscriberDB(where, password=password)
