"""Stores: every SQL statement of the program, one module per store.

    base         SQLiteStore (the one connection helper: WAL, one connection per thread,
                 BEGIN IMMEDIATE transactions), now_iso
    ledger       pushes (one row per issue and channel) and leases (who is sending it now)
    mail         email_sends (one row per issue and recipient) and mail_events (bounces, complaints)
    subscribers  subscribers, consent, suppressions (their own database, [email] subscribers_db)
    wechat       WeChat access tokens, uploads, intents, drafts, remote images
    linkcache    the link-check cache
    jobs         the scheduler's job store (APScheduler's table, read only)

The stores on the ledger share its file and connection (`store.db` is the Ledger): a store
declares its tables once, as SCHEMA, and creates them when it is opened. Transports, the
subscribe form, bounce processing and the scheduler call store methods; they write no SQL.

Every store maps onto a shared PostgreSQL database: tables and statements are plain SQL
(`INSERT … ON CONFLICT`, no SQLite-only types), each method is one short transaction, and the
lease is a row lease (`SELECT … FOR UPDATE` on the (issue, channel) row, then the same holder
checks), not a file lock. The exactly-once commit points (a send is `sending` before the final
dot, `sent` after the 250 reply; a WeChat intent before each non-idempotent call) are the
transactions of these methods, one row each.
"""
