"""`publisher db upgrade` and `publisher db copy --to URL` (issue 22): a SQLite install moves to
PostgreSQL losslessly, a non-empty target is refused, an old schema is refused until upgraded."""

from __future__ import annotations

import json
import sqlite3

from publisher.stores.analytics import AnalyticsStore
from publisher.stores.base import Store
from publisher.stores.ledger import Ledger
from publisher.stores.linkcache import LinkCache
from publisher.stores.mail import MailStore
from publisher.stores.subscribers import SubscriberDB
from publisher.stores.wechat import WeChatStore
from tests.test_cli import assert_clean_error, run

TABLES = ("pushes", "email_sends", "mail_events", "subscribers", "consent", "suppressions", "wechat_tokens",
          "wechat_uploads", "link_cache", "ledger_meta", "sent_marks", "click_links", "clicks", "unsubscribes")


def _install(tmp_path, url: str = "") -> None:
    (tmp_path / "publisher.toml").write_text(
        f'[paths]\nledger = "publisher.db"\n[email]\nsubscribers_db = "subscribers.db"\n'
        f'[database]\nurl = "{url}"\n', encoding="utf-8")


def _fill(tmp_path) -> None:
    ledger = Ledger(tmp_path / "publisher.db")
    ledger.begin("2026-11-23", "email")
    ledger.finish("2026-11-23", "email", details={"note": "引号 ' \" \\ %s ? 100%"})
    ledger.fail("2026-11-30", "wechat", "x" * 100_000)
    mail = MailStore(ledger)
    for i in range(1500):
        mail.mark("2026-11-23", f"u{i}@x.org", "sent", message_id=f"<{i}@x>", code=250)
    mail.record_event("k", "hard", "u1@x.org", "2026-11-23", "5.1.1", "evidence\nline", "bounced", "mbox")
    mail.close()
    WeChatStore(ledger).put_token("app", "stable", "tok", 1.7e9 + 0.123456, 1.7e9)
    WeChatStore(ledger).put_upload("app", "h", "uploadimg", "https://mmbiz/1", None)
    LinkCache(ledger).put([("https://a/?q=%20", 200, 1, None, None, 12.5)])
    clicks = AnalyticsStore(ledger)
    clicks.record_links("2026-11-23", "email", [(1, "https://a/?q=%20&x='", "引号 <b>"), (2, "https://b/", "")])
    for day in ("2026-11-24", "2026-11-25"):
        clicks.count_click("2026-11-23", 1, "https://a/?q=%20&x='", day=day)
        clicks.count_unsubscribe("2026-11-23", day=day)
    clicks.count_click("2026-11-23", 2, "https://b/", day="2026-11-24")
    clicks.close()
    subs = SubscriberDB(tmp_path / "subscribers.db")
    subs.add_many([(f"s{i}@x.org", f"名{i}", "t") for i in range(300)])
    subs.confirm("p@x.org", subs.request("p@x.org", "::1"), "::1")
    subs.mark_campaign("2026-11-23", ledger.identity(), "done")  # the ledger's identity travels with it
    subs.forget("s5@x.org")


def _rows(db: Store, table: str) -> list[tuple]:
    return sorted(tuple(r) for r in db.connect().execute(f"SELECT * FROM {table}"))


def test_copy_moves_every_row_and_refuses_a_non_empty_target(tmp_path, pg_url):
    _install(tmp_path)
    _fill(tmp_path)
    before = run("report", "--format", "json", cwd=tmp_path)
    assert before.returncode == 0, before.stderr
    done = run("db", "copy", "--to", pg_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "counts verified" in done.stdout and "email_sends: 1500 rows" in done.stdout
    old_ledger, old_subs = Store(tmp_path / "publisher.db"), Store(tmp_path / "subscribers.db")
    new = Store(pg_url)
    for table in TABLES:
        src = old_subs if table in ("subscribers", "consent", "suppressions", "sent_marks") else old_ledger
        assert _rows(new, table) == _rows(src, table), table

    again = run("db", "copy", "--to", pg_url, cwd=tmp_path)
    assert_clean_error(again, "is not empty", "new, empty database")

    _install(tmp_path, pg_url)  # the install now runs on PostgreSQL
    count = run("subscribers", "count", cwd=tmp_path)
    assert count.returncode == 0 and "300" in count.stdout, count.stdout + count.stderr
    after = run("report", "--format", "json", cwd=tmp_path)  # the report reads the same numbers there
    assert after.returncode == 0, after.stderr
    old_report, new_report = json.loads(before.stdout), json.loads(after.stdout)
    assert new_report["issues"] == old_report["issues"] and new_report["list"] == old_report["list"]
    mail = {e["issue"]: e for e in new_report["issues"]}["2026-11-23"]["channels"]["email"]
    assert mail["clicks"] == {"https://a/?q=%20&x='": 2, "https://b/": 1} and mail["unsubscribed"] == 2
    listed = run("status", cwd=tmp_path)
    assert listed.returncode == 0 and "2026-11-30" in listed.stdout, listed.stdout + listed.stderr
    # new rows get new ids after the copied ones
    assert SubscriberDB(pg_url).request("later@x.org", "::1")
    ids = [r[0] for r in new.connect().execute("SELECT id FROM subscribers ORDER BY id")]
    assert len(ids) == len(set(ids)) == 301


def test_an_old_schema_is_refused_with_the_command_and_db_upgrade_fixes_it(tmp_path):
    _install(tmp_path)
    conn = sqlite3.connect(tmp_path / "subscribers.db")  # a file from before schema versions
    conn.executescript("""
        CREATE TABLE subscribers (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE COLLATE NOCASE,
          name TEXT NOT NULL DEFAULT '', tags TEXT NOT NULL DEFAULT '', state TEXT NOT NULL DEFAULT 'active',
          created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
        CREATE TABLE consent (email TEXT NOT NULL COLLATE NOCASE, source TEXT NOT NULL,
          ip TEXT NOT NULL DEFAULT '', requested_at TEXT NOT NULL, confirmed_at TEXT);
        INSERT INTO subscribers VALUES (1, 'a@x.org', 'A', '', 'active', 't', 't');""")
    conn.close()
    assert_clean_error(run("subscribers", "count", cwd=tmp_path), "schema version 1", "publisher db upgrade")
    up = run("db", "upgrade", cwd=tmp_path)
    assert up.returncode == 0 and "subscribers: schema version 1 → 2" in up.stdout, up.stdout + up.stderr
    assert "ledger: created" in up.stdout
    again = run("db", "upgrade", cwd=tmp_path)
    assert "up to date" in again.stdout
    count = run("subscribers", "count", cwd=tmp_path)
    assert count.returncode == 0 and "1" in count.stdout
