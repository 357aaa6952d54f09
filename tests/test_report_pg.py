"""The campaign report and click counts on both backends (issue 27 on issue 22's `[database] url`):
the same ledger rows give the same report on SQLite and on PostgreSQL; clicks counted by several
`publisher serve` processes at once on one shared PostgreSQL database lose no count; the
unsubscribe counter `serve` uses counts on PostgreSQL; and a channel's own transport supplies its
numbers (Transport.report), so a third-party channel contributes without the report naming it."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from publisher import pipeline
from publisher.analytics import serve_app, unsubscribe_counter
from publisher.report import gather, to_html
from publisher.settings import load_settings
from publisher.stores import open_ledger, open_subscribers
from publisher.stores.analytics import AnalyticsStore
from publisher.stores.mail import MailStore
from publisher.stores.wechat import WeChatStore
from publisher.unsubscribe import serve_in_thread
from tests.conftest import EXAMPLES, ROOT
from tests.email_support import write_project
from tests.test_report import ANALYTICS, CLICK_SECRET, NEW, OLD, local, request, secrets_env


def _project(tmp_path, db_url: str, extra: str = ""):
    database = f'[database]\nurl = "{db_url}"\n' if db_url else ""
    return load_settings(write_project(tmp_path, 25, extra=ANALYTICS + database + extra))


def _fill(settings) -> None:
    """Two issues' worth of ledger rows, written through the stores as push, bounces and serve do."""
    ledger = open_ledger(settings)
    subs = open_subscribers(settings)
    subs.add_many([(f"r{i}@example.com", "", "") for i in range(6)])
    for k in range(2):  # two readers confirm through the form before the new issue
        addr = f"new{k}@example.com"
        assert subs.confirm(addr, subs.request(addr, "127.0.0.1"), "127.0.0.1")
    mail = MailStore(ledger)
    for issue, readers in ((OLD, [f"r{i}@example.com" for i in range(6)]),
                           (NEW, [f"r{i}@example.com" for i in range(6)] + ["new0@example.com", "new1@example.com"])):
        ledger.begin(issue, "email")
        for n, addr in enumerate(readers):
            state = "failed" if addr == "r5@example.com" else ("ambiguous" if addr == "new1@example.com" else "sent")
            mail.mark(issue, addr, state, message_id=f"<{issue}.{n}@x>", code=250 if state == "sent" else 550)
        ledger.finish(issue, "email")
    mail.record_event("k1", "hard", "r1@example.com", NEW, "5.1.1", "gone", "bounced", "maildir")
    mail.record_event("k2", "soft", "r2@example.com", NEW, "4.2.2", "full", "noted", "maildir")
    mail.record_event("k3", "soft", "r2@example.com", NEW, "4.2.2", "full again", "noted", "maildir")
    mail.record_event("k4", "complaint", "r3@example.com", NEW, None, "abuse", "unsubscribed", "maildir")
    mail.record_event("k5", "hard", "r4@example.com", OLD, "5.1.1", "gone", "bounced", "maildir")
    wechat = WeChatStore(ledger)
    ledger.begin(NEW, "wechat")
    wechat.record_draft("wx-app", NEW, "MEDIA-1")
    wechat.record_publish("wx-app", NEW, "PUB-1", 0, "https://mp.weixin.qq.com/s/x")
    ledger.finish(NEW, "wechat", remote_id="PUB-1", url="https://mp.weixin.qq.com/s/x")
    issue, _ = pipeline.load(EXAMPLES / "issues" / f"{NEW}.md")
    links = pipeline.render(issue, "email", settings).metadata["click_links"]
    store = AnalyticsStore(ledger)
    store.record_links(NEW, "email", links)
    for number, times in ((1, 3), (4, 5), (2, 1)):
        for _ in range(times):
            store.count_click(NEW, number, store.urls(NEW, number)[0], day="2026-11-24")
    store.count_click(NEW, 4, store.urls(NEW, 4)[0], day="2026-11-25")
    counted = unsubscribe_counter(settings)  # what serve calls on each unsubscribe
    assert [counted("r0@example.com"), counted("R0@example.com"), counted("nobody@example.com")] == [NEW, NEW, ""]
    store.close()
    mail.close()


def _stable(data: dict) -> dict:
    out = {k: v for k, v in data.items() if k not in ("generated_at", "ledger")}
    for entry in out["issues"]:
        for row in entry["channels"].values():
            for key in ("started_at", "updated_at", "finished_at", "send_seconds"):
                row.pop(key, None)
    return out


def test_the_same_rows_give_the_same_report_on_both_backends(tmp_path, pg_url, monkeypatch):
    secrets_env(monkeypatch)
    reports = {}
    for name, url in (("sqlite", ""), ("postgresql", pg_url)):
        settings = _project(tmp_path / name, url)
        _fill(settings)
        reports[name] = gather(settings)
    assert not (tmp_path / "postgresql" / "publisher.db").exists(), "team mode writes no SQLite ledger"
    pg = reports["postgresql"]
    assert pg["ledger"].startswith("postgresql://")
    assert _stable(pg) == _stable(reports["sqlite"])
    issues = {e["issue"]: e for e in pg["issues"]}
    mail = issues[NEW]["channels"]["email"]
    assert {k: mail[k] for k in ("recipients", "sent", "failed", "bounced", "bounced_hard", "bounced_soft",
                                 "complaints", "unsubscribed", "other_states")} == \
        {"recipients": 8, "sent": 6, "failed": 1, "bounced": 2, "bounced_hard": 1, "bounced_soft": 1,
         "complaints": 1, "unsubscribed": 2, "other_states": {"ambiguous": 1}}
    assert issues[OLD]["channels"]["email"]["bounced_hard"] == 1
    assert sum(mail["clicks"].values()) == 10 and all(isinstance(v, int) for v in mail["clicks"].values())
    assert issues[NEW]["channels"]["wechat"]["wechat"] == {
        "draft_media_id": "MEDIA-1", "publish_id": "PUB-1", "publish_status": 0,
        "article_url": "https://mp.weixin.qq.com/s/x"}
    # confirmations belong to the first issue addressed to the new reader
    assert issues[NEW]["confirmations"] == 2 and issues[OLD]["confirmations"] == 0
    assert pg["list"] == {"active": 8}
    assert to_html(pg, _project(tmp_path / "postgresql", pg_url)).count("<svg") == 4


COUNTER = """
import sys
from publisher.stores.base import Store
from publisher.stores.analytics import AnalyticsStore
store = AnalyticsStore(Store(sys.argv[1]))
print("ready", flush=True)
sys.stdin.readline()  # start together
for k in range(int(sys.argv[2])):
    store.count_click("2026-11-23", k % 3 + 1, "https://example.com/%d" % (k % 3 + 1), day="2026-11-24")
    store.count_unsubscribe("2026-11-23", day="2026-11-24")
"""


def test_clicks_from_several_processes_at_once_lose_no_count(pg_url):
    store = AnalyticsStore(open_ledger_at(pg_url))
    store.record_links(NEW, "email", [(n, f"https://example.com/{n}", f"story {n}") for n in (1, 2, 3)])
    procs = [subprocess.Popen([sys.executable, "-c", COUNTER, pg_url, "300"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(4)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            p.stdin.close()
            assert p.wait(timeout=300) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    got = {link["number"]: link["clicks"] for link in store.links_of(NEW)}
    assert got == {1: 400, 2: 400, 3: 400}
    assert store.unsubscribed(NEW) == 1200
    assert store.clicks_by_day(NEW) == {"2026-11-24": 1200}


def open_ledger_at(url: str):
    from publisher.stores.ledger import Ledger

    return Ledger(url)


def test_two_serve_apps_on_one_postgresql_count_a_burst_exactly(tmp_path, pg_url, monkeypatch):
    """Two `publisher serve` instances (each its own stores and connections) behind one proxy:
    1,000 redirects from 64 clients spread over both, every one 302 to its own link and counted once."""
    secrets_env(monkeypatch)
    settings = _project(tmp_path, pg_url, "[serve]\nthreads = 8\n")
    open_subscribers(settings)
    issue, _ = pipeline.load(EXAMPLES / "issues" / f"{NEW}.md")
    rendition = pipeline.render(issue, "email", settings)
    store = AnalyticsStore(open_ledger(settings))
    store.record_links(NEW, "email", rendition.metadata["click_links"])
    links = list(dict.fromkeys(re.findall(r'href="(https://news\.example\.org/r/[^"]+)"', rendition.body)))
    servers = [serve_in_thread(serve_app(settings), threads=8, timeout=30) for _ in range(2)]
    try:
        def click(k: int) -> tuple[int, str]:
            status, headers, _ = request(servers[k % 2].server_port, "GET", local(links[k % len(links)]))
            return status, headers.get("Location", "")

        with ThreadPoolExecutor(64) as pool:
            got = list(pool.map(click, range(1000)))
        forged = local(links[0])[:-3] + "AAA"
        assert request(servers[0].server_port, "GET", forged)[0] == 400
    finally:
        for srv in servers:
            srv.shutdown()
    assert Counter(s for s, _ in got) == {302: 1000}
    recorded = {link["number"]: link for link in store.links_of(NEW)}
    for k, (_, location) in enumerate(got):
        assert urllib.parse.unquote(location) == recorded[k % len(links) + 1]["url"]
    assert {n: link["clicks"] for n, link in recorded.items()} == \
        {n: len(range(n - 1, 1000, len(links))) for n in recorded}


def test_a_third_party_channel_supplies_its_own_numbers(tmp_path, monkeypatch):
    """The report asks the channel's transport (Transport.report); it names no channel itself."""
    from publisher.transports import base

    secrets_env(monkeypatch)
    settings = _project(tmp_path, "")
    ledger = open_ledger(settings)
    ledger.begin(NEW, "carrier-pigeon")
    ledger.finish(NEW, "carrier-pigeon")
    ledger.begin(NEW, "smoke-signal")
    ledger.fail(NEW, "smoke-signal", "rain")

    class Pigeons(base.Transport):
        channel = "carrier-pigeon"

        @classmethod
        def report(cls, settings, ledger, issue, push):
            return {"sent": 12, "failed": 1, "bounced": 2, "bounced_hard": 2, "lost_at_sea": 3}

    def get_transport(name):
        if name == "carrier-pigeon":
            return Pigeons
        raise LookupError(name)  # an uninstalled channel: one delivery, as by default

    monkeypatch.setattr("publisher.transports.get_transport", get_transport)
    rows = gather(settings)["issues"][0]["channels"]
    assert {k: rows["carrier-pigeon"][k] for k in ("state", "sent", "failed", "bounced", "bounced_hard",
                                                    "complaints", "lost_at_sea")} == \
        {"state": "done", "sent": 12, "failed": 1, "bounced": 2, "bounced_hard": 2, "complaints": 0, "lost_at_sea": 3}
    assert "clicks" not in rows["carrier-pigeon"]
    assert {k: rows["smoke-signal"][k] for k in ("state", "sent", "failed")} == {"state": "failed", "sent": 0,
                                                                                 "failed": 1}

    from publisher.errors import PublisherError

    def broken(cls, *args):
        raise KeyError("oops")

    monkeypatch.setattr(Pigeons, "report", classmethod(broken))
    with pytest.raises(PublisherError, match="carrier-pigeon channel's transport could not give its numbers"):
        gather(settings)
    monkeypatch.setattr(Pigeons, "report", classmethod(lambda cls, *a: {"sent": "12"}))
    with pytest.raises(PublisherError, match="gave sent as something other than a whole number"):
        gather(settings)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_report_cli_json_on_both_backends(tmp_path, monkeypatch, backend, request):
    secrets_env(monkeypatch)
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else ""
    settings = _project(tmp_path, url)
    _fill(settings)
    import json
    import os

    env = {"PATH": "/usr/bin:/bin", "PUBLISHER_CLICK_SECRET": CLICK_SECRET,
           "PUBLISHER_UNSUBSCRIBE_SECRET": os.environ["PUBLISHER_UNSUBSCRIBE_SECRET"]}
    got = subprocess.run([sys.executable, "-m", "publisher", "--config", str(tmp_path / "publisher.toml"),
                          "report", NEW, "--format", "json"], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env=env)
    assert got.returncode == 0, got.stderr
    data = json.loads(got.stdout)
    assert [e["issue"] for e in data["issues"]] == [NEW]
    assert data["issues"][0]["channels"]["email"]["unsubscribed"] == 2
    assert url == "" or not (tmp_path / "publisher.db").exists()


def test_serve_counts_on_after_postgresql_restarts(tmp_path, pg_cluster, monkeypatch, caplog):
    """PostgreSQL restarted while `serve` is idle: the next redirects (a cached link and one never
    looked up) and the next unsubscribe count are answered and counted, none lost, no 500."""
    secrets_env(monkeypatch)
    url = pg_cluster.create_db()
    settings = _project(tmp_path, url)
    open_subscribers(settings)
    issue, _ = pipeline.load(EXAMPLES / "issues" / f"{NEW}.md")
    rendition = pipeline.render(issue, "email", settings)
    store = AnalyticsStore(open_ledger(settings))
    store.record_links(NEW, "email", rendition.metadata["click_links"])
    MailStore(open_ledger(settings)).mark(NEW, "r0@example.com", "sent", message_id="<m@x>", code=250)
    links = list(dict.fromkeys(re.findall(r'href="(https://news\.example\.org/r/[^"]+)"', rendition.body)))
    srv = serve_in_thread(serve_app(settings), threads=1, timeout=30)  # one thread: one set of connections
    counted = unsubscribe_counter(settings)
    try:
        port = srv.server_port
        assert request(port, "GET", local(links[0]))[0] == 302
        assert counted("r0@example.com") == NEW
        pg_cluster.restart()
        assert request(port, "GET", local(links[0]))[0] == 302  # cached link: the count reconnects
        assert request(port, "GET", local(links[1]))[0] == 302  # a lookup on the dropped connection
        assert counted("r0@example.com") == NEW
    finally:
        srv.shutdown()
    check = AnalyticsStore(open_ledger(settings))
    got = {link["number"]: link["clicks"] for link in check.links_of(NEW)}
    assert (got[1], got[2]) == (2, 1) and check.unsubscribed(NEW) == 2
    assert not [r for r in caplog.records if "not counted" in r.getMessage()]


def test_a_redirect_while_postgresql_is_down_is_a_clear_503(tmp_path, pg_cluster, monkeypatch):
    from publisher.analytics import redirect_app
    from publisher.clicks import redirect_url

    url = pg_cluster.create_db()
    store = AnalyticsStore(open_ledger_at(url))
    store.record_links(NEW, "email", [(1, "https://example.com/story", "story")])
    app = redirect_app(store, CLICK_SECRET)
    path = local(redirect_url("https://news.example.org", CLICK_SECRET, NEW, 1, "https://example.com/story"))
    got = {}

    def call():
        body = app({"REQUEST_METHOD": "GET", "PATH_INFO": path},
                   lambda status, headers: got.update(status=status, headers=dict(headers)))
        return b"".join(body)

    pg_cluster.stop("immediate")
    try:
        assert call() == b"try again in a moment\n" and got["status"].startswith("503")
        assert "Location" not in got["headers"]
    finally:
        pg_cluster.start()
    assert call() == b"https://example.com/story\n" and got["headers"]["Location"] == "https://example.com/story"
    assert store.links_of(NEW)[0]["clicks"] == 1
