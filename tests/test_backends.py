"""Every store on both backends (issue 22): the same calls give the same answers on SQLite files
and on a shared PostgreSQL database (a throw-away cluster, tests/pg_support.py)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from publisher.stores import schema
from publisher.stores.base import Store
from publisher.stores.ledger import LeaseHeld, Ledger
from publisher.stores.linkcache import LinkCache
from publisher.stores.mail import MailStore
from publisher.stores.subscribers import SubscriberDB
from publisher.stores.wechat import WeChatStore


def _where(tmp_path, db_url, name):
    return db_url or tmp_path / name


@pytest.fixture
def ledger(tmp_path, db_url):
    return Ledger(_where(tmp_path, db_url, "publisher.db"))


@pytest.fixture
def subs(tmp_path, db_url):
    return SubscriberDB(_where(tmp_path, db_url, "subscribers.db"))


def test_pushes_begin_update_finish(ledger):
    ledger.begin("2026-11-23", "email")
    ledger.begin("2026-11-23", "email")
    ledger.update("2026-11-23", "email", details={"a": 1, "中": "文"})
    ledger.update("2026-11-23", "email", details={"b": 2})
    ledger.finish("2026-11-23", "email", remote_id="r1", url="https://x/1", details={"c": 3})
    rec = ledger.get("2026-11-23", "email")
    assert (rec.state, rec.attempts, rec.remote_id) == ("done", 2, "r1")
    assert rec.details == {"a": 1, "中": "文", "b": 2, "c": 3}
    ledger.fail("2026-11-30", "wechat", "boom 100% ? done")
    assert [(r.issue, r.state, r.last_error) for r in ledger.records()] == [
        ("2026-11-30", "failed", "boom 100% ? done"), ("2026-11-23", "done", None)]
    with pytest.raises(ValueError):
        ledger.update("2026-11-23", "email", state="nope")


def test_lease_refuses_a_live_holder_and_is_taken_over_after_a_missed_heartbeat(ledger):
    lease = ledger.acquire("2026-11-23", "email", command="publisher push 2026-11-23")
    other = Ledger(ledger.url or ledger.path)
    with pytest.raises(LeaseHeld, match=f"pid {os.getpid()} on .*publisher push 2026-11-23"):
        other.acquire("2026-11-23", "email")
    other.acquire("2026-11-23", "wechat").release()
    with ledger.transaction() as conn:  # the holder's heartbeat stopped long ago, on another host
        conn.execute("UPDATE leases SET host = 'elsewhere', heartbeat = heartbeat - 3600")
    taken = other.acquire("2026-11-23", "email")
    assert lease.lost.wait(10) or True  # its beat notices at the next interval
    lease.release()  # removes nothing of the new holder's
    assert [r["token"] for r in ledger.leases()] == [taken.token]
    taken.release()
    assert ledger.leases() == []


def test_racing_acquires_grant_one_lease(ledger):
    where = ledger.url or ledger.path
    won, lost = [], []
    go = threading.Barrier(6)

    def race():
        mine = Ledger(where)
        go.wait()
        try:
            won.append(mine.acquire("2026-11-23", "wechat"))
        except LeaseHeld:
            lost.append(1)

    threads = [threading.Thread(target=race) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(won), len(lost)) == (1, 5)
    won[0].release()


def test_mail_store(ledger):
    mail = MailStore(ledger)
    mail.mark("i1", "A@x.org", "sending", message_id="<1@x>", attempt=True)
    mail.mark("i1", "A@x.org", "sent", message_id="<1@x>", code=250)
    mail.mark("i1", "b@x.org", "sending", message_id="<2@x>", attempt=True)
    mail.mark("i1", "c@x.org", "failed", message_id="<3@x>", code=550, error="no such user")
    assert mail.counts("i1") == {"sent": 1, "sending": 1, "failed": 1}
    assert mail.in_flight("i1") == ["b@x.org"]
    mail.settle_in_flight("i1", "ambiguous")
    assert sorted(mail.final("i1", ["A@x.org", "b@x.org", "c@x.org", "d@x.org"])) == ["A@x.org", "b@x.org", "c@x.org"]
    assert mail.failed("i1") == [("c@x.org", 550, "no such user")]
    mail.unfail("i1", ["c@x.org"])
    assert mail.counts("i1")["pending"] == 1
    assert [r[0] for r in mail.sends_to("a@X.org")] == ["i1"]  # addresses compare without case
    assert mail.delivered_issues("a@x.org", 5) == ["i1"]
    mail.record_event("k1", "hard", "a@x.org", "i1", "5.1.1", "evidence", "bounced", "mbox")
    mail.record_event("k1", "soft", "a@x.org", "i1", "4.0.0", "again", "none", "mbox")  # once per key
    assert tuple(mail.event("k1")) == ("hard", "a@x.org", "bounced")
    assert mail.forget("A@X.ORG") == 2
    assert mail.sends_to("a@x.org") == [] and mail.event("k1") is None
    mail.close()


def test_subscribers_store(subs):
    assert subs.add_many([("Ann@x.org", "Ann", "t"), ("bob@x.org", "Bob", "")]) == set()
    assert subs.add_many([("ann@X.org", "Ann B", "t2")]) == set()  # one person, any case
    assert subs.count() == 2 and subs.get("ANN@x.org").name == "Ann B"
    first = subs.request("new@x.org", "127.0.0.1")
    assert first and subs.get("new@x.org").state == "pending"
    second = subs.request("new@x.org", "127.0.0.2")
    assert second and second != first
    assert not subs.confirm("new@x.org", first, "127.0.0.3")  # a link a newer request replaced
    assert subs.confirm("new@x.org", second, "127.0.0.3")
    assert not subs.confirm("new@x.org", second, "127.0.0.3")  # a link works once
    rows = subs.consents("new@x.org")
    assert [(r["ip"], r["confirmed_at"] is not None) for r in rows] == [("127.0.0.1", False), ("127.0.0.2", True)]
    assert subs.set_state("bob@x.org", "unsubscribed", only_from=("active",))
    assert not subs.set_state("bob@x.org", "active", only_from=("bounced",))
    assert subs.counts() == {"pending": 0, "active": 2, "unsubscribed": 1, "bounced": 0}
    assert [s.email for s in subs.iter(page=1)] == ["Ann@x.org", "new@x.org"]
    assert subs.forget("new@x.org") and subs.is_suppressed("NEW@x.org")
    assert subs.add_many([("new@x.org", "", "")]) == {"new@x.org"}  # a forgotten address stays out
    assert subs.get("new@x.org") is None
    sid = subs.get("ann@x.org").id
    assert subs.email_of(sid) == "Ann@x.org" and subs.is_active("ann@x.org")


def test_wechat_store_and_link_cache(ledger):
    store = WeChatStore(ledger)
    store.put_token("app", "stable", "tok", 2e9, 1.5e9)
    store.put_token("app", "stable", "tok2", 2e9 + 0.25, 1.5e9)
    assert tuple(store.token("app", "stable")) == ("tok2", 2e9 + 0.25)  # REAL keeps its precision
    store.put_upload("app", "h1", "uploadimg", "https://mmbiz/1", None)
    store.put_upload("app", "h1", "uploadimg", "https://mmbiz/1b", None)
    store.put_remote("app", "https://remote/a.png", "h1")
    assert store.image_urls("app") == ({"h1": "https://mmbiz/1b"}, {"https://remote/a.png": "https://mmbiz/1b"})
    store.intend("app", "i1", "draft_add", None)
    assert list(store.intents("app", "i1")) == ["draft_add"]
    store.record_draft("app", "i1", "m1")
    assert store.intents("app", "i1") == {}
    store.record_publish("app", "i1", "p1", 0, "https://mp/1")
    store.record_draft("app", "i1", "m2")  # a new draft forgets the old publish
    draft = store.draft("app", "i1")
    assert (draft["media_id"], draft["publish_id"], draft["publish_status"]) == ("m2", None, None)
    cache = LinkCache(ledger)
    cache.put([("https://a/", 200, 1, None, "https://a/", 100.5), ("https://b/", 404, 0, "gone", None, 50.0)])
    cache.put([("https://a/", 301, 1, None, "https://a2/", 200.5)])
    assert [(r["url"], r["status"]) for r in cache.fresh(["https://a/", "https://b/"], 60.0)] == [("https://a/", 301)]


def test_a_schema_newer_than_this_publisher_is_refused(tmp_path, db_url):
    Ledger(_where(tmp_path, db_url, "publisher.db"))
    raw = Store(_where(tmp_path, db_url, "publisher.db"))
    with raw.transaction() as conn:
        conn.execute("UPDATE schema_version SET version = 99 WHERE part = 'ledger'")
    with pytest.raises(schema.SchemaError, match="newer than this publisher knows .*upgrade publisher"):
        Ledger(_where(tmp_path, db_url, "publisher.db"))


def test_an_older_schema_is_refused_until_db_upgrade(tmp_path, db_url, monkeypatch):
    where = _where(tmp_path, db_url, "subscribers.db")
    subs = SubscriberDB(where)
    subs.add_many([("a@x.org", "A", "")])
    monkeypatch.setitem(schema.MIGRATIONS["subscribers"], 3, {"sqlite": "CREATE TABLE extra_a (x TEXT)",
                                                            "postgresql": "CREATE TABLE extra_a (x TEXT)"})
    with pytest.raises(schema.SchemaError, match="version 2, this publisher needs 3: run `publisher db upgrade`"):
        SubscriberDB(where)
    raw = Store(where)
    assert schema.upgrade(raw, "subscribers", SubscriberDB.schema) == (2, 3)
    assert "extra_a" in raw.tables()
    assert SubscriberDB(where).get("a@x.org").name == "A"


def test_a_subscribers_file_from_before_versioning_is_upgraded_losslessly(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE subscribers (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE COLLATE NOCASE,
          name TEXT NOT NULL DEFAULT '', tags TEXT NOT NULL DEFAULT '',
          state TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'unsubscribed', 'bounced')),
          created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
        CREATE TABLE consent (email TEXT NOT NULL COLLATE NOCASE, source TEXT NOT NULL, ip TEXT NOT NULL
          DEFAULT '', requested_at TEXT NOT NULL, confirmed_at TEXT);
        INSERT INTO subscribers VALUES (7, 'a@x.org', 'A', '', 'active', 't0', 't0');
        INSERT INTO consent VALUES ('a@x.org', 'form', '1.2.3.4', 't0', NULL);
        INSERT INTO consent VALUES ('a@x.org', 'form', '1.2.3.5', 't1', NULL);""")
    conn.close()
    with pytest.raises(schema.SchemaError, match="run `publisher db upgrade`"):
        SubscriberDB(path)
    assert schema.upgrade(Store(path), "subscribers", SubscriberDB.schema) == (1, 2)
    subs = SubscriberDB(path)
    assert subs.get("a@x.org").id == 7
    request = subs.request("p@x.org", "::1")  # 'pending' is allowed now
    assert request == 3  # consent rows kept their rowids as ids; new ones continue after them
    assert [r["ip"] for r in subs.consents("a@x.org")] == ["1.2.3.4", "1.2.3.5"]
    assert subs.confirm("p@x.org", request, "9.9.9.9") and subs.get("p@x.org").state == "active"


def test_store_keeps_working_after_postgresql_restarts(pg_cluster, pg_url):
    ledger = Ledger(pg_url)
    ledger.begin("2026-11-23", "email")
    pg_cluster.restart()
    deadline = time.monotonic() + 30
    while True:  # the first statement on the dropped connection fails clearly; the next reconnects
        try:
            assert ledger.get("2026-11-23", "email").state == "pushing"
            break
        except Exception:
            assert time.monotonic() < deadline
            time.sleep(0.2)


def test_an_idle_connection_the_restart_dropped_is_replaced_before_the_next_statement(pg_cluster, pg_url,
                                                                                     monkeypatch):
    """After a restart, the first statement of a store that sat idle does not fail: the dead
    connection is found (SELECT 1 after IDLE_CHECK seconds idle) and replaced first."""
    from publisher.stores.base import PgConnection

    monkeypatch.setattr(PgConnection, "IDLE_CHECK", 0.0)
    ledger = Ledger(pg_url)
    ledger.begin("2026-11-30", "email")
    pg_cluster.restart()
    assert ledger.get("2026-11-30", "email").state == "pushing"  # no exception on the first try
    ledger.finish("2026-11-30", "email")
    assert ledger.get("2026-11-30", "email").state == "done"


def test_campaign_claims_are_disjoint_and_a_dead_workers_rows_come_back(ledger):
    from publisher.stores.campaigns import CampaignStore

    store = CampaignStore(ledger)
    pages = [[(f"r{i:03d}@x.org", f"<{i}@x>") for i in range(j, j + 50)] for j in range(0, 200, 50)]
    assert store.start("i1", '{"t": 1}', iter(pages))
    assert not store.start("i1", '{"t": 2}', iter(pages))  # written once: joined
    assert store.get("i1")["recipients"] == 200 and store.running() == ["i1"]
    a, b = store.join("worker a"), store.join("worker b")
    got_a, got_b = a.claim("i1", 30), b.claim("i1", 30)
    assert len(got_a) == len(got_b) == 30 and not set(got_a) & set(got_b)
    mail = MailStore(ledger)
    mail.mark("i1", got_a[0], "sending", message_id="<x>", attempt=True)  # in flight when a dies
    mail.mark("i1", got_a[1], "sent", message_id="<x>", code=250)
    b.drop("i1", [got_b[0]])  # unsubscribed before sending: leaves the campaign
    with ledger.transaction() as conn:  # a stopped beating an hour ago (on another host: no pid check)
        conn.execute("UPDATE campaign_workers SET host = 'elsewhere' WHERE token = ?", (a.token,))
        conn.execute("UPDATE campaign_workers SET heartbeat = heartbeat - 3600 WHERE token = ?", (a.token,))
    assert store.reap("i1", "resend") == [got_a[0]]  # a is dead; b is alive
    c = store.join("worker c")
    rest = []
    while True:
        batch = c.claim("i1", 64)
        if not batch:
            break
        rest += batch
    assert got_a[0] in rest and got_a[1] not in rest and not set(rest) & set(got_b)
    assert len(rest) == 200 - 30 - 1  # all but b's 30 claims (one of them dropped) and the sent one
    for e in rest + got_b[1:]:
        mail.mark("i1", e, "sent", message_id="<x>", code=250)
    assert store.finish_if_done("i1") and store.running() == []
    assert mail.counts("i1") == {"sent": 199}
    b.leave()
    c.leave()
    assert {w["command"] for w in store.workers()} <= {"worker a"}  # a was reaped: gone


def test_a_sender_on_sqlite_never_loads_libpq(tmp_path):
    """psycopg (libpq, ~20 MB of a sender's memory) is imported only when a PostgreSQL URL is
    opened: the SMTP and provider senders and the worker on SQLite files never load it."""
    import subprocess
    import sys

    code = ("import sys\n"
            "import publisher.cli, publisher.campaign, publisher.transports.email\n"
            "import publisher.transports.providers.campaign, publisher.stores\n"
            "from publisher.stores.ledger import Ledger\n"
            f"Ledger({str(tmp_path / 'publisher.db')!r}).begin('2026-11-23', 'email')\n"
            "print('psycopg' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_a_postgresql_error_is_caught_as_a_database_error(pg_cluster):
    """db_errors() names psycopg's errors once PostgreSQL is in use (psycopg loaded lazily)."""
    from publisher.stores.base import db_errors

    ledger = Ledger(pg_cluster.create_db())
    with pytest.raises(db_errors()):
        ledger.connect().execute("SELECT * FROM no_such_table")


def test_a_claim_costs_the_same_whatever_was_sent_before(tmp_path, db_url):
    """Team mode's claim reads the next open rows from an index and stops at its limit: its cost
    does not grow with the recipients already sent (it hashed every claim and sorted every pending
    row on PostgreSQL, and walked every sent row on SQLite: quadratic over a campaign — 140 ms a
    claim at 100,000 recipients). Bounds only a blow-up: the 20× larger campaign may cost at most
    4× per claim, where a scan would cost about 20×."""
    from publisher.stores.campaigns import CampaignStore

    ledger = Ledger(_where(tmp_path, db_url, "publisher.db"))
    store = CampaignStore(ledger)
    conn = ledger.connect()

    def per_claim(issue: str, n: int) -> float:
        emails = [f"r{i:07d}@example.com" for i in range(n)]
        store.start(issue, "{}", [[(e, f"<{i}@x>") for i, e in enumerate(emails)]])
        sent = emails[: n * 7 // 10]  # the campaign is 70 % through
        with ledger.transaction() as tx:
            tx.executemany("UPDATE email_sends SET state = 'sent' WHERE issue = ? AND email = ?",
                           [(issue, e) for e in sent])
            tx.executemany("INSERT INTO email_claims (issue, email, worker) VALUES (?, ?, 'gone')",
                           [(issue, e) for e in sent])
        if db_url:
            conn.execute("ANALYZE")
        worker = store.join("test")
        try:
            times = []
            for _ in range(11):
                t = time.perf_counter()
                got = worker.claim(issue, 32)
                times.append(time.perf_counter() - t)
                assert len(got) == 32 and got[0] not in sent
            return sorted(times)[len(times) // 2]
        finally:
            worker.leave()

    small, big = per_claim("small", 1_500), per_claim("big", 30_000)
    assert big < 4 * small + 0.002, (small, big)


def test_a_senders_batch_statements_stay_key_lookups_under_cached_plans(tmp_path, db_url):
    """What a team-mode sender runs for each batch (the claim, the batch's final rows, its active
    readers) costs the same late in a campaign as early, and on a large list as on a small one,
    with the plans PostgreSQL caches for a connection's prepared statements, made while the tables
    were small. It did not: the claim's NOT EXISTS became an anti-join that scanned every claim
    for every row (80 ms a claim at 3,000 claims), and the page lookups walked every active
    subscriber or every row of the issue (20 ms a page at 8,000): four workers spent one of two
    cores in PostgreSQL. The list is imported and the campaigns written and claimed as the commands do
    (no ANALYZE by the test). Bounds only a blow-up: at most 3× (+ 1 ms), where the scans cost
    10-30×."""
    from publisher.stores.campaigns import CampaignStore
    from publisher.subscribers import import_csv

    ledger = Ledger(_where(tmp_path, db_url, "publisher.db"))
    subs = SubscriberDB(_where(tmp_path, db_url, "subscribers.db"))
    store, mail = CampaignStore(ledger), MailStore(ledger)
    readers: list[str] = []

    def campaign(issue: str, more: int) -> None:  # `subscribers import`, then `push`
        new = [f"{issue}{i:07d}@example.com" for i in range(more)]
        (tmp_path / "list.csv").write_text("email\n" + "\n".join(new) + "\n", encoding="utf-8")
        assert import_csv(subs, tmp_path / "list.csv")[0] == more
        readers.extend(new)
        store.start(issue, "{}", [[(e, f"<{i}@x>") for i, e in enumerate(readers)]])

    def batches(issue: str, k: int) -> tuple[float, float]:
        """Median times of the next `k` batches' claim and page lookups; every batch is then sent."""
        claims, pages = [], []
        for _ in range(k):
            t = time.perf_counter()
            got = worker.claim(issue, 16)
            t1 = time.perf_counter()
            active, final = subs.active_among(got), mail.final(issue, got)
            pages.append(time.perf_counter() - t1)
            claims.append(t1 - t)
            assert len(got) == len(active) == 16 and not final
            for e in got:
                mail.mark(issue, e, "sending", message_id="<m@x>", attempt=True)
                mail.mark(issue, e, "sent", message_id="<m@x>", code=250)
        return sorted(claims)[k // 2], sorted(pages)[k // 2]

    worker = store.join("test")
    try:
        campaign("a", 600)
        batches("a", 15)  # prepared after 5 runs; PostgreSQL settles on a generic plan after 5 more
        _, small_page = batches("a", 15)
        campaign("b", 12_000)  # the same statements (and their cached plans) on a list 20× larger
        batches("b", 5)
        early_claim, big_page = batches("b", 15)
        batches("b", 230)  # about 4,000 claimed and sent
        late_claim, _ = batches("b", 15)
    finally:
        worker.leave()
    assert big_page < 3 * small_page + 0.001, (small_page, big_page)
    assert late_claim < 3 * early_claim + 0.001, (early_claim, late_claim)
