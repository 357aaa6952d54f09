"""Stores: every SQL statement of the program, one module per store.

    base         SQLiteStore (the one connection helper: WAL, one connection per thread,
                 BEGIN IMMEDIATE transactions), now_iso
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

Every store maps onto a shared PostgreSQL database: each method is one short transaction
(BEGIN IMMEDIATE here, a row lock there), upserts are `INSERT … ON CONFLICT`, and the few
SQLite-only clauses (WITHOUT ROWID, COLLATE NOCASE, INSERT OR REPLACE / OR IGNORE, PRAGMA) have
direct equivalents (a plain table, citext or lower(), ON CONFLICT DO UPDATE / DO NOTHING) — all
of them in this package, so the port touches no other module. The lease is a row lease
(`SELECT … FOR UPDATE` on the (issue, channel) row of `leases`, then the same holder checks:
dead on this host or heartbeat older than LEASE_STALE), not a file lock. The exactly-once commit points (a send is `sending` before the final
dot, `sent` after the 250 reply; a WeChat intent before each non-idempotent call) are the
transactions of these methods, one row each.
"""
