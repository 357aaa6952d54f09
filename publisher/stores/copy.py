"""`publisher db copy`: a SQLite install (ledger and subscribers files) into an empty
PostgreSQL database, every table in one transaction, row counts verified."""

from __future__ import annotations

from publisher.stores.analytics import AnalyticsStore
from publisher.stores.base import DatabaseError, Store
from publisher.stores.ledger import Ledger
from publisher.stores.linkcache import LinkCache
from publisher.stores.mail import MailStore
from publisher.stores.subscribers import SubscriberDB
from publisher.stores.wechat import WeChatStore


def _open_all(ledger_where, subscribers_where, password: str | None = None):
    """The ledger and subscribers stores at these places, with every table of every store."""
    ledger = Ledger(ledger_where, password=password)
    MailStore(ledger)
    WeChatStore(ledger)
    LinkCache(ledger)
    AnalyticsStore(ledger)
    return ledger, SubscriberDB(subscribers_where, password=password)


def _columns(db: Store, table: str) -> list[str]:
    if db.url:
        return [r[0] for r in db.connect().execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ? ORDER BY ordinal_position", (table,))]
    return [r[1] for r in db.connect().execute(f'PRAGMA table_info("{table}")')]


def _refuse_a_used_target(target: Store) -> None:
    for table in sorted(t for t in target.tables() if t != "schema_version"):
        n = target.connect().execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
        if n:
            raise DatabaseError(f"the target database {target.where} is not empty (table {table} has {n} "
                                "rows): copy into a new, empty database (createdb), never over live data")


def _plan(sources, dst: Store) -> list[tuple[Store, str]]:
    """(store, table) for every table of the sources, each checked to have its place in `dst`."""
    plan = [(src, table) for src in sources for table in sorted(src.tables() - {"schema_version"})
            if not table.startswith("sqlite_")]
    missing = sorted(t for _, t in plan if t not in dst.tables())
    if missing:
        raise DatabaseError(f"no PostgreSQL table for {', '.join(missing)}: this publisher does not know "
                            "them (a newer version's tables?); nothing was copied")
    for src, table in plan:  # every column must have its place, or the copy would lose it
        extra = sorted(set(_columns(src, table)) - set(_columns(dst, table)))
        if extra:
            raise DatabaseError(f"table {table} has column(s) {', '.join(map(repr, extra))} that the target "
                                "does not: this publisher does not know them (run `publisher db upgrade` on "
                                "the source with the same version); nothing was copied")
    return plan


def _copy_table(out, src: Store, table: str) -> int:
    """COPY one table into the open transaction `out`, checked against the source's count; identity
    columns continue after the copied ids."""
    cols = _columns(src, table)
    names = ", ".join(f'"{c}"' for c in cols)
    n = 0
    with out.raw.cursor().copy(f'COPY "{table}" ({names}) FROM STDIN') as copy:
        for row in src.connect().execute(f'SELECT {names} FROM "{table}"'):
            copy.write_row(tuple(row))
            n += 1
    want = src.connect().execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
    if n != want:
        raise DatabaseError(f"copy check failed: read {n} rows of {table}, the source counts "
                            f"{want}; nothing was committed")
    for col in cols:
        seq = out.execute("SELECT pg_get_serial_sequence(?, ?)", (table, col)).fetchone()[0]
        if seq:
            out.execute(f'SELECT setval(?, (SELECT COALESCE(MAX("{col}"), 0) + 1 FROM "{table}"), '
                        'false)', (seq,))
    return n


def copy_to(ledger_path, subscribers_path, url: str, password: str | None = None,
            progress=None) -> dict[str, int]:
    """Copy a SQLite install (ledger and subscribers files) into the empty PostgreSQL database
    `url`: every table, in one transaction, row counts verified. Returns table -> rows copied.
    Refuses a target that holds any row of ours, and a source table the target has no place for."""
    src_ledger, src_subs = _open_all(ledger_path, subscribers_path)
    target = Store(url, password=password)
    _refuse_a_used_target(target)
    dst_ledger, _ = _open_all(url, url, password)
    plan = _plan((src_ledger, src_subs), dst_ledger)
    counts: dict[str, int] = {}
    for src in (src_ledger, src_subs):
        src.connect().execute("BEGIN")  # one snapshot of each file while it is read
    try:
        with dst_ledger.transaction() as out:
            for src, table in plan:
                counts[table] = _copy_table(out, src, table)
                if progress:
                    progress(table, counts[table])
            for _, table in plan:
                got = out.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
                if got != counts[table]:
                    raise DatabaseError(f"copy check failed: {table} has {got} rows in the target, "
                                        f"{counts[table]} in the source; nothing was committed")
    finally:
        for src in (src_ledger, src_subs):
            src.connect().execute("COMMIT")
    check = target.same()  # what another connection sees after the commit
    for table, n in counts.items():
        got = check.connect().execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
        if got != n:
            raise DatabaseError(f"copy check failed after commit: {table} has {got} rows, {n} copied")
    return counts
