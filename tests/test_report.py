"""The campaign report and click counts, end to end: a fixture campaign of two issues sent through
a real SMTP server (aiosmtpd), bounces read from a Maildir, confirmations and unsubscribes through
`publisher serve`, clicks through its signed redirect — and a report whose every number is
checked against the ledger, the SMTP server and the server's log. Then the page in Chromium."""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import http.client
import json
import logging
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from publisher import pipeline
from publisher.analytics import serve_app
from publisher.bounces import process_mailboxes, verp_address
from publisher.clicks import redirect_url, rewrite, signature
from publisher.errors import ConfigError
from publisher.push import push_issue
from publisher.report import gather, report_link, to_html, write_report
from publisher.settings import load_settings
from publisher.stores.analytics import AnalyticsStore
from publisher.stores.ledger import Ledger
from publisher.subscribe import make_confirm_token
from publisher.subscribers import SubscriberDB
from publisher.transports import email as email_transport
from publisher.unsubscribe import serve_in_thread
from tests import bounce_samples as S
from tests.conftest import EXAMPLES, ROOT
from tests.email_support import PASSWORD, SECRET, Handler, SmtpServer, make_cert, write_project

CLICK_SECRET = "click-secret-for-tests-0123456789"
REPORT_SECRET = "report-password-for-tests-0123"
BASE = "https://news.example.org"
LIST_ID = "embedded-ai.example.org"
BOUNCES = "bounces@example.org"
OLD, NEW = "2026-11-09", "2026-11-23"
ANALYTICS = f'\n[subscribe]\nurl = "{BASE}/subscribe"\nconfirm_url = "{BASE}/confirm?token={{token}}"\n[bounces]\naddress = "{BOUNCES}"\nmailbox = "bounces"\n[analytics]\nclicks = true\nbase_url = "{BASE}"\n'


def secrets_env(mp: pytest.MonkeyPatch, cert=None) -> None:
    if cert is not None:
        mp.setenv("SSL_CERT_FILE", str(cert[0]))
    mp.setenv("PUBLISHER_SMTP_PASSWORD", PASSWORD)
    mp.setenv("PUBLISHER_UNSUBSCRIBE_SECRET", SECRET)
    mp.setenv("PUBLISHER_CLICK_SECRET", CLICK_SECRET)
    mp.setenv("PUBLISHER_REPORT_SECRET", REPORT_SECRET)
    mp.delenv("PUBLISHER_CONFIG", raising=False)


def copy_issues(folder: Path) -> None:
    shutil.copytree(EXAMPLES / "issues", folder / "issues")


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def local(url: str) -> str:
    """The path and query of a public URL, asked of the local server (as a reverse proxy would)."""
    parts = urllib.parse.urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def messages_of(handler: Handler, issue: str) -> dict:
    """The received messages of `issue`, by recipient."""
    out = {}
    for m in handler.messages:
        msg = email.message_from_bytes(m.data, policy=email.policy.default)
        if msg["Message-ID"].startswith(f"<{issue}."):
            out[m.rcpts[0]] = msg
    return out


def redirects(msg) -> list[str]:
    html = msg.get_body(preferencelist=("html",)).get_content()
    return list(dict.fromkeys(re.findall(r'href="(https://news\.example\.org/r/[^"]+)"', html)))


# -- the fixture campaign ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("campaign")
    cert = make_cert(tmp_path_factory.mktemp("tls"))
    mp = pytest.MonkeyPatch()
    secrets_env(mp, cert)
    mp.setattr(email_transport, "BACKOFF_BASE", 0.02)
    logs = Lines()
    plog = logging.getLogger("publisher")
    old_level = plog.level
    plog.setLevel(logging.INFO)
    plog.addHandler(logs)
    smtp = SmtpServer(Handler(reject_rcpt={"r09@example.com", "new2@example.com"}), cert[0], cert[1]).start()
    srv = None
    try:
        cfg = write_project(tmp, smtp.port, extra=ANALYTICS)
        copy_issues(tmp)
        settings = load_settings(cfg)
        db = SubscriberDB(settings.path("email", "subscribers_db"))
        readers = [f"r{i:02d}@example.com" for i in range(10)]
        db.add_many([(e, "", "") for e in readers])
        srv = serve_in_thread(serve_app(settings), threads=8, timeout=5)
        port = srv.server_port
        expect: dict = {"confirm": 0, "refused": 0, "forbidden_methods": 0}

        report = push_issue(settings, tmp / "issues" / f"{OLD}.md", ["email"])
        assert [o.state for o in report.outcomes] == ["done"], report.outcomes
        old_msgs = messages_of(smtp.handler, OLD)

        # r08 unsubscribes after the first issue (one click, the header's URL): counted for it
        def one_click(msg) -> int:
            url = re.search(r"<(http://[^>]+)>", msg["List-Unsubscribe"]).group(1)
            return request(port, "POST", local(url), b"List-Unsubscribe=One-Click",
                           {"Content-Type": "application/x-www-form-urlencoded"})[0]

        assert one_click(old_msgs["r08@example.com"]) == 200

        # three readers subscribe through the form's confirmation between the issues
        for k in range(3):
            addr = f"new{k}@example.com"
            number = db.request(addr, "127.0.0.1")
            assert number
            token = make_confirm_token(SECRET, LIST_ID, addr, number, int(time.time()) + 3600)
            status, _, _ = request(port, "POST", "/confirm", urllib.parse.urlencode({"token": token}).encode(),
                                   {"Content-Type": "application/x-www-form-urlencoded"})
            assert status == 200
            expect["confirm"] += 1

        report = push_issue(settings, tmp / "issues" / f"{NEW}.md", ["email"])
        assert [o.state for o in report.outcomes] == ["done"], report.outcomes
        new_msgs = messages_of(smtp.handler, NEW)

        # bounces and a complaint from a Maildir, in the shapes real servers send
        def verp(addr: str, issue: str) -> str:
            return verp_address(BOUNCES, SECRET, LIST_ID, issue, db.get(addr).id, addr)

        import mailbox

        box = mailbox.Maildir(str(tmp / "bounces"), create=True)
        unsub_r03 = re.search(r"<(http://[^>]+)>", new_msgs["r03@example.com"]["List-Unsubscribe"]).group(1)
        for raw in (S.postfix_hard(verp("r01@example.com", NEW), "r01@example.com"),
                    S.exim_dsn_soft(verp("r02@example.com", NEW), "r02@example.com"),
                    S.arf_complaint(verp("r03@example.com", NEW), "r03@example.com", unsub_r03),
                    S.gmail_hard(verp("r04@example.com", OLD), "r04@example.com")):
            box.add(raw)
        box.close()
        process_mailboxes(settings)

        # unsubscribes after the second issue: r05, r06, new0 once; r07 twice (the second
        # changes nothing and is not counted)
        for addr in ("r05@example.com", "r06@example.com", "new0@example.com", "r07@example.com",
                     "r07@example.com"):
            assert one_click(new_msgs[addr]) == 200

        # clicks: the same links in different readers' copies are the same URL
        new_links = redirects(new_msgs["r00@example.com"])
        assert all(redirects(m) == new_links for m in new_msgs.values()), "no reader identity in links"
        plan = {4: 5, 7: 2, 1: 1}
        for number, times in plan.items():
            for k in range(times):
                msg = list(new_msgs.values())[k]
                status, headers, _ = request(port, "GET", local(redirects(msg)[number - 1]))
                assert status == 302
        old_links = redirects(old_msgs["r00@example.com"])
        assert request(port, "GET", local(old_links[2]))[0] == 302
        # HEAD (a link checker) is answered and not counted; POST is refused
        assert request(port, "HEAD", local(new_links[1]))[0] == 302
        assert request(port, "POST", local(new_links[1]))[0] == 405
        expect["clicks"] = {NEW: plan, OLD: {3: 1}}

        # forged, altered and replayed links: 400, counted nowhere
        store = AnalyticsStore(Ledger(settings.path("paths", "ledger")))
        url4 = store.urls(NEW, 4)[0]
        sig4 = new_links[3].rsplit(".", 1)[1]
        bad = [
            f"/r/{NEW}/4.AAAAAAAAAAAAAAAAAAAAAA",                       # forged
            f"/r/{NEW}/5.{sig4}",                                        # another number
            f"/r/{OLD}/4.{sig4}",                                        # another issue
            local(old_links[2]).replace(OLD, NEW),                        # replayed on another issue
            f"/r/{NEW}/4.{signature('an-old-retired-key', NEW, 4, url4)}",  # an old key
            f"/r/{NEW}/4.{signature(CLICK_SECRET, NEW, 4, 'https://evil.example/')}",  # another URL
            f"/r/2026-12-07/1.{signature(CLICK_SECRET, '2026-12-07', 1, url4)}",  # an issue never sent
            f"/r/{NEW}/4", f"/r/{NEW}/4.{sig4}x", f"/r/{NEW}/0.{sig4}", "/r/../../etc/passwd",
            f"/r/{NEW}/4.{sig4[:-1]}%00", f"/r/{NEW}/{'9' * 30}.{sig4}", "/r/" + "a" * 5000,
        ]
        for path in bad:
            status, headers, _ = request(port, "GET", path)
            assert status in (400, 414) and "Location" not in headers, path
            expect["refused"] += status == 400
        yield {"settings": settings, "cfg": cfg, "smtp": smtp.handler, "logs": logs.lines, "port": port,
               "expect": expect, "tmp": tmp, "new_links": new_links}
    finally:
        if srv is not None:
            srv.shutdown()
        smtp.stop()
        plog.removeHandler(logs)
        plog.setLevel(old_level)
        mp.undo()


def ledger_rows(settings, sql: str, *args) -> list:
    conn = sqlite3.connect(settings.path("paths", "ledger"))
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def test_every_number_of_the_report_matches_the_ledger_smtp_and_server_logs(campaign):
    settings, logs, expect = campaign["settings"], campaign["logs"], campaign["expect"]
    data = gather(settings)
    assert [e["issue"] for e in data["issues"]] == [NEW, OLD]
    by_issue = {e["issue"]: e for e in data["issues"]}
    for issue in (OLD, NEW):
        row = by_issue[issue]["channels"]["email"]
        received = messages_of(campaign["smtp"], issue)
        states = dict(ledger_rows(settings, "SELECT state, COUNT(*) FROM email_sends WHERE issue = ? "
                                            "GROUP BY state", issue))
        # sent: what the SMTP server accepted, and the ledger's sent rows
        assert row["sent"] == len(received) == states["sent"]
        # failed: refused by the server (550 at RCPT: r09, then new2), which also bounces the address
        assert row["failed"] == states["failed"] == 1
        assert row["recipients"] == sum(states.values())
        kinds = dict(ledger_rows(settings, "SELECT kind, COUNT(*) FROM mail_events WHERE issue = ? "
                                           "GROUP BY kind", issue))
        assert (row["bounced_hard"], row["bounced_soft"], row["complaints"]) == \
            (kinds.get("hard", 0), kinds.get("soft", 0), kinds.get("complaint", 0))
        assert row["bounced"] == row["bounced_hard"] + row["bounced_soft"]
        # unsubscribes: the server's log lines, counted for the issue they followed
        logged = sum(1 for line in logs if line == f"unsubscribe done (issue {issue})")
        assert row["unsubscribed"] == logged
        # clicks: the server's log lines per link number, mapped to the issue's recorded URLs
        counted = Counter(int(line.split()[2]) for line in logs if line.startswith(f"click {issue} "))
        links = {link["number"]: link for link in row["links"]}
        assert {n: link["clicks"] for n, link in links.items() if link["clicks"]} == dict(counted)
        assert row["clicks"] == {link["url"]: link["clicks"] for link in links.values()}
        assert dict(counted) == expect["clicks"][issue]
        # time to send: from the push's start to the last recipient's final record, in the ledger
        (start,), (end,) = (ledger_rows(settings, "SELECT created_at FROM pushes WHERE issue = ? AND "
                                                  "channel = 'email'", issue),
                            ledger_rows(settings, "SELECT MAX(updated_at) FROM email_sends WHERE issue = ?", issue))
        want = (dt.datetime.fromisoformat(end[0]) - dt.datetime.fromisoformat(start[0])).total_seconds()
        assert row["send_seconds"] == int(want) >= 0 and row["finished_at"] == end[0]
    # the figures themselves, as planned by the fixture
    new, old = by_issue[NEW]["channels"]["email"], by_issue[OLD]["channels"]["email"]
    assert (old["recipients"], old["sent"], new["recipients"], new["sent"]) == (10, 9, 11, 10)
    assert (new["bounced_hard"], new["bounced_soft"], new["complaints"], old["bounced_hard"]) == (1, 1, 1, 1)
    assert (old["unsubscribed"], new["unsubscribed"]) == (1, 4)
    assert sum(1 for line in logs if line == "unsubscribe no change") == 1
    # confirmations: the server's log, each for the first issue sent after it
    assert by_issue[NEW]["confirmations"] == expect["confirm"] == \
        sum(1 for line in logs if line == "confirm: subscribed") == 3
    assert by_issue[OLD]["confirmations"] == 0
    # refused links were counted nowhere: the clicks table holds exactly the logged clicks
    assert sum(1 for line in logs if line == "click refused") == expect["refused"]
    total = ledger_rows(settings, "SELECT SUM(count) FROM clicks")[0][0]
    assert total == sum(1 for line in logs if line.startswith("click 20")) == 9
    # the list now, from the subscribers database
    # 13 readers: 4 bounced (r09, new2 refused; r01, r04 hard bounces), 6 unsubscribed (r08, r05,
    # r06, r07, new0 through serve; r03 by complaint), 3 active
    assert data["list"] == {"active": 3, "unsubscribed": 6, "bounced": 4}


def test_json_from_the_command_is_the_same_numbers_as_numbers(campaign):
    cmd = [sys.executable, "-m", "publisher", "--config", str(campaign["cfg"]), "report", "--format", "json", NEW]
    env = {"PATH": "/usr/bin:/bin", "PUBLISHER_CLICK_SECRET": CLICK_SECRET}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=campaign["tmp"], timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert [e["issue"] for e in got["issues"]] == [NEW]
    email_row = got["issues"][0]["channels"]["email"]
    for key in ("sent", "failed", "bounced", "complaints", "unsubscribed"):
        assert type(email_row[key]) is int
    assert all(type(v) is int for v in email_row["clicks"].values())
    want = gather(campaign["settings"], [NEW])["issues"][0]["channels"]["email"]
    assert email_row == json.loads(json.dumps(want))


def test_the_report_is_served_only_behind_its_secret(campaign, monkeypatch):
    port = campaign["port"]
    assert request(port, "GET", "/report")[0] == 401
    bad = base64.b64encode(b"editor:wrong").decode()
    assert request(port, "GET", "/report", headers={"Authorization": f"Basic {bad}"})[0] == 401
    assert request(port, "GET", "/report", headers={"Authorization": "Basic !!"})[0] == 401
    good = base64.b64encode(f"editor:{REPORT_SECRET}".encode()).decode()
    status, headers, body = request(port, "GET", "/report", headers={"Authorization": f"Basic {good}"})
    assert status == 200 and "no-store" in headers["Cache-Control"]
    assert body.count(b"<svg") == 5 and b"Email delivery per issue" in body
    # without the variable, /report does not exist (not even behind a password)
    monkeypatch.delenv("PUBLISHER_REPORT_SECRET")
    app = serve_app(campaign["settings"])
    assert app.routes == {"redirect": True, "report": False}
    srv = serve_in_thread(app)
    try:
        assert request(srv.server_port, "GET", "/report", headers={"Authorization": f"Basic {good}"})[0] == 404
    finally:
        srv.shutdown()
    # guessing: after 20 wrong passwords from one address, 429 (the right one still opens the page)
    codes = [request(port, "GET", "/report", headers={"Authorization": f"Basic {bad}"})[0] for _ in range(20)]
    assert codes.count(429) >= 1 and set(codes) <= {401, 429}
    assert request(port, "GET", "/report", headers={"Authorization": f"Basic {bad}"})[0] == 429
    assert request(port, "GET", "/report", headers={"Authorization": f"Basic {good}"})[0] == 200
    monkeypatch.setenv("PUBLISHER_REPORT_SECRET", "short")
    with pytest.raises(ConfigError, match="PUBLISHER_REPORT_SECRET"):
        serve_app(campaign["settings"])


def test_status_links_the_report(campaign, monkeypatch):
    settings = campaign["settings"]
    assert report_link(settings) == f"report: {BASE}/report (password: $PUBLISHER_REPORT_SECRET); " \
                                    "`publisher report` writes it to a file"
    monkeypatch.delenv("PUBLISHER_REPORT_SECRET")
    out = write_report(settings, None, campaign["tmp"] / "build" / "report.html")
    assert report_link(settings) == f"report: file://{out.resolve()} (refresh it with `publisher report`)"
    cmd = [sys.executable, "-m", "publisher", "--config", str(campaign["cfg"]), "status", "--format", "tsv"]
    got = subprocess.run(cmd, capture_output=True, text=True, cwd=campaign["tmp"], timeout=120,
                         env={"PATH": "/usr/bin:/bin"})
    assert got.returncode == 0 and f"report: file://{out.resolve()}" in got.stderr
    assert all(line.count("\t") == 6 for line in got.stdout.splitlines()), "tsv rows untouched"


# -- the page in Chromium ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("width", [375, 1280])
def test_the_report_renders_every_chart_without_errors_in_chromium(campaign, browser, width):
    settings = campaign["settings"]
    path = write_report(settings, None, campaign["tmp"] / f"report-{width}.html")
    page = browser.new_page(viewport={"width": width, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
            else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: problems.append(f"request {r.url}") if not r.url.startswith(("file:", "data:"))
            else None)
    try:
        page.goto(path.resolve().as_uri())
        page.wait_for_load_state("load")
        charts = page.evaluate("""() => [...document.querySelectorAll('figure.chart')].map(f => {
            const svg = f.querySelector('svg'); const box = svg ? svg.getBoundingClientRect() : null;
            const table = f.parentElement.querySelector('table');
            return {id: f.id, w: box ? box.width : 0, h: box ? box.height : 0,
                    bars: svg ? svg.querySelectorAll('.series .rect, .series .line, .series path').length : 0,
                    labels: svg ? svg.querySelectorAll('text').length : 0,
                    table: table ? table.rows.length : 0,
                    inside: box ? box.right <= window.innerWidth + 1 : false,
                    cut: svg ? [...svg.querySelectorAll('text')].filter(t => {
                        const r = t.getBoundingClientRect();
                        return r.width > 0 && (r.left < box.left - 1 || r.right > box.right + 1);
                    }).map(t => t.textContent) : []};
        })""")
        assert len(charts) == 5, charts  # three over time, one of most-read stories per issue
        for c in charts:
            assert c["w"] > 200 and c["h"] > 100 and c["bars"] > 0 and c["labels"] > 3 and c["table"] > 1, c
            assert c["inside"], f"{c['id']} overflows {width} px"
            assert c["cut"] == [], f"{c['id']}: labels cut off at the chart's edge"
        scroll = page.evaluate("document.documentElement.scrollWidth")
        assert scroll <= width, f"the page scrolls sideways at {width} px ({scroll})"
        shot = campaign["tmp"] / f"report-{width}.png"
        page.screenshot(path=str(shot), full_page=width == 375)
        assert shot.stat().st_size > 10_000
        if width == 1280 and (ROOT / "docs").is_dir() and __import__("os").environ.get("PUBLISHER_UPDATE_DOCS"):
            shutil.copy(shot, ROOT / "docs" / "report.png")
    finally:
        page.close()
    assert problems == []


# -- redirects under load, and the rules without a campaign ---------------------------------------------


@pytest.fixture
def served(tmp_path, monkeypatch):
    """`publisher serve`'s app with clicks on and one issue's links recorded (as push records them)."""
    secrets_env(monkeypatch)
    cfg = write_project(tmp_path, 25, extra=ANALYTICS + "[serve]\nthreads = 8\n")
    settings = load_settings(cfg)
    SubscriberDB(settings.path("email", "subscribers_db"))
    issue, _ = pipeline.load(EXAMPLES / "issues" / f"{NEW}.md")
    rendition = pipeline.render(issue, "email", settings)
    store = AnalyticsStore(Ledger(settings.path("paths", "ledger")))
    store.record_links(NEW, "email", rendition.metadata["click_links"])
    srv = serve_in_thread(serve_app(settings), threads=settings["serve"]["threads"],
                          timeout=settings["serve"]["timeout"])
    links = list(dict.fromkeys(re.findall(r'href="(https://news\.example\.org/r/[^"]+)"', rendition.body)))
    yield settings, srv.server_port, links, store
    srv.shutdown()


def test_a_burst_of_1000_redirects_is_answered_and_counted_exactly(served):
    settings, port, links, store = served

    def click(k: int) -> tuple[int, str]:
        status, headers, _ = request(port, "GET", local(links[k % len(links)]))
        return status, headers.get("Location", "")

    with ThreadPoolExecutor(64) as pool:
        got = list(pool.map(click, range(1000)))
    assert Counter(s for s, _ in got) == {302: 1000}
    recorded = {link["number"]: link for link in store.links_of(NEW)}
    for k, (_, location) in enumerate(got):
        n = k % len(links) + 1
        assert urllib.parse.unquote(location) == recorded[n]["url"], "only ever the issue's own link"
    assert sum(link["clicks"] for link in store.links_of(NEW)) == 1000
    assert {n: link["clicks"] for n, link in recorded.items()} == \
        {n: len(range(n - 1, 1000, len(links))) for n in recorded}


def test_a_link_edited_and_sent_again_keeps_both_targets(served):
    settings, port, links, store = served
    old_target = store.urls(NEW, 4)[0]
    status, headers, _ = request(port, "GET", local(links[3]))  # the server caches link 4 now
    assert status == 302 and headers["Location"] == old_target
    store.record_links(NEW, "email", [(4, "https://example.com/corrected", "corrected")])
    status, headers, _ = request(port, "GET", local(links[3]))
    assert status == 302 and headers["Location"] == old_target
    fresh = redirect_url(BASE, CLICK_SECRET, NEW, 4, "https://example.com/corrected")
    status, headers, _ = request(port, "GET", local(fresh))
    assert status == 302 and headers["Location"] == "https://example.com/corrected"
    assert headers["Referrer-Policy"] == "no-referrer" and headers["Cache-Control"] == "no-store"


def test_rewrite_leaves_other_schemes_alone_and_escapes_labels():
    html = ('<p><a href="https://a.example/x?y=1&amp;z=2">A &lt;b&gt;</a> <a href="mailto:x@example.org">m</a>'
            '<a href="javascript:alert(1)">j</a><a href="%%UNSUBSCRIBE_URL%%">u</a>'
            '<a class="k" href="https://a.example/x?y=1&amp;z=2"><b>again</b></a>'
            '<a href="http://b.example/\x01">ctl</a></p>')
    text = "see https://a.example/x?y=1&z=2. and https://other.example/"
    out, out_text, links = rewrite(html, text, NEW, BASE, CLICK_SECRET)
    assert links == [(1, "https://a.example/x?y=1&z=2", "A <b>")]
    one = redirect_url(BASE, CLICK_SECRET, NEW, 1, "https://a.example/x?y=1&z=2")
    assert out.count(f'href="{one}"') == 2 and 'href="mailto:x@example.org"' in out
    assert 'href="javascript:alert(1)"' in out and 'href="%%UNSUBSCRIBE_URL%%"' in out
    assert out_text == f"see {one}. and https://other.example/"
    with pytest.raises(ValueError):
        rewrite(html, text, "../x", BASE, CLICK_SECRET)


def test_hostile_labels_are_text_in_the_page(tmp_path, monkeypatch):
    secrets_env(monkeypatch)
    settings = load_settings(write_project(tmp_path, 25, extra=ANALYTICS))
    store = AnalyticsStore(Ledger(settings.path("paths", "ledger")))
    evil = '<script>alert(1)</script></svg><img src=x onerror=alert(2)>{{ 7*7 }}'
    store.record_links(NEW, "email", [(1, "https://a.example/\"><script>x</script>", evil)])
    store.count_click(NEW, 1, "https://a.example/\"><script>x</script>")
    Ledger(settings.path("paths", "ledger")).begin(NEW, "email")
    page = to_html(gather(settings), settings)
    assert "<script" not in page and "<img" not in page and "<svg><img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "{{ 7*7 }}" in page  # shown as text
    assert page.count("<svg") == 4


def test_clicks_on_needs_base_url_and_secret(tmp_path, monkeypatch):
    secrets_env(monkeypatch)
    issue, _ = pipeline.load(EXAMPLES / "issues" / f"{NEW}.md")
    settings = load_settings(write_project(tmp_path, 25, extra="[analytics]\nclicks = true\n"))
    with pytest.raises(ConfigError, match=r"\[analytics\] base_url"):
        pipeline.render(issue, "email", settings)
    settings = load_settings(write_project(tmp_path, 25, extra='[analytics]\nclicks = true\nbase_url = "x"\n'))
    with pytest.raises(ConfigError, match="base_url must be"):
        pipeline.render(issue, "email", settings)
    monkeypatch.delenv("PUBLISHER_CLICK_SECRET")
    settings = load_settings(write_project(tmp_path, 25, extra=ANALYTICS))
    with pytest.raises(ConfigError, match="PUBLISHER_CLICK_SECRET"):
        pipeline.render(issue, "email", settings)
    # off (the default): links are untouched and nothing is recorded
    plain = pipeline.render(issue, "email", load_settings(write_project(tmp_path, 25)))
    assert "/r/" not in plain.body and not plain.metadata.get("click_links")


def test_report_of_an_empty_project_and_a_bad_issue_name(tmp_path, monkeypatch):
    secrets_env(monkeypatch)
    cfg = write_project(tmp_path, 25)
    data = gather(load_settings(cfg))
    assert data["issues"] == [] and not (tmp_path / "publisher.db").exists(), "a report writes no ledger"
    cmd = [sys.executable, "-m", "publisher", "--config", str(cfg), "report", "not-an-issue"]
    got = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert got.returncode == 1 and "names no issue" in got.stderr and "Traceback" not in got.stderr
    cmd[-1:] = ["--out", str(tmp_path / "r.html")]
    got = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert got.returncode == 0 and "Nothing has been pushed yet" in (tmp_path / "r.html").read_text()


def test_wechat_draft_publish_state_and_article_url(tmp_path, monkeypatch):
    from publisher.stores.wechat import WeChatStore

    secrets_env(monkeypatch)
    settings = load_settings(write_project(tmp_path, 25))
    ledger = Ledger(settings.path("paths", "ledger"))
    wechat = WeChatStore(ledger)
    ledger.begin(NEW, "wechat")
    wechat.record_draft("wx-app", NEW, "MEDIA-1")
    ledger.begin(OLD, "wechat")
    wechat.record_draft("wx-app", OLD, "MEDIA-0")
    url = "https://mp.weixin.qq.com/s/abc?x=1&y=<2>"
    wechat.record_publish("wx-app", OLD, "PUB-0", 0, url)
    ledger.finish(OLD, "wechat", remote_id="PUB-0", url=url)
    data = gather(settings)
    rows = {e["issue"]: e["channels"]["wechat"] for e in data["issues"]}
    assert rows[NEW]["wechat"] == {"draft_media_id": "MEDIA-1", "publish_id": None, "publish_status": None,
                                   "article_url": None}
    assert (rows[NEW]["state"], rows[NEW]["sent"]) == ("pushing", 0)
    assert rows[OLD]["wechat"] == {"draft_media_id": "MEDIA-0", "publish_id": "PUB-0", "publish_status": 0,
                                   "article_url": url}
    assert (rows[OLD]["state"], rows[OLD]["sent"], rows[OLD]["failed"]) == ("done", 1, 0)
    page = to_html(data, settings)
    assert 'href="https://mp.weixin.qq.com/s/abc?x=1&amp;y=&lt;2&gt;"' in page and "draft MEDIA-1" in page
    assert page.count("<svg") == 3  # the charts over time; no email, so no stories


def test_links_are_recorded_before_any_message_and_dry_run_records_none(tmp_path, monkeypatch):
    """A reader never gets a link the server cannot resolve: when recording fails, nothing is sent."""
    secrets_env(monkeypatch)
    cfg = write_project(tmp_path, 9, extra=ANALYTICS)  # port 9: nothing listens; must not be reached
    copy_issues(tmp_path)
    settings = load_settings(cfg)
    SubscriberDB(settings.path("email", "subscribers_db")).add_many([("a@example.com", "", "")])
    report = push_issue(settings, tmp_path / "issues" / f"{NEW}.md", ["email"], dry_run=True)
    assert [o.state for o in report.outcomes] == ["dry-run"]
    ledger = Ledger(settings.path("paths", "ledger"))
    assert AnalyticsStore(ledger).links_of(NEW) == []

    def broken(self, *a, **k):
        raise sqlite3.OperationalError("disk I/O error")

    sent = []
    monkeypatch.setattr(AnalyticsStore, "record_links", broken)
    monkeypatch.setattr(email_transport.EmailTransport, "push", lambda self, r, ctx: sent.append(r))
    report = push_issue(settings, tmp_path / "issues" / f"{NEW}.md", ["email"])
    assert [o.state for o in report.outcomes] == ["failed"] and "disk I/O error" in report.outcomes[0].message
    assert sent == [] and ledger.get(NEW, "email").state == "failed"


def test_a_click_that_cannot_be_counted_still_reaches_the_story(tmp_path, caplog):
    from publisher.analytics import redirect_app

    class Full(AnalyticsStore):
        def count_click(self, *a, **k):
            raise sqlite3.OperationalError("database or disk is full")

    store = Full(Ledger(tmp_path / "publisher.db"))
    store.record_links(NEW, "email", [(1, "https://example.com/story", "story")])
    app = redirect_app(store, CLICK_SECRET)
    got = {}
    body = app({"REQUEST_METHOD": "GET", "PATH_INFO": local(redirect_url(BASE, CLICK_SECRET, NEW, 1,
                                                                        "https://example.com/story"))},
               lambda status, headers: got.update(status=status, headers=dict(headers)))
    assert got["status"] == "302 Found" and got["headers"]["Location"] == "https://example.com/story"
    assert b"".join(body) == b"https://example.com/story\n"
    assert any("not counted: database or disk is full" in r.getMessage() for r in caplog.records)


def test_an_issue_never_pushed_is_a_clear_error(campaign):
    cmd = [sys.executable, "-m", "publisher", "--config", str(campaign["cfg"]), "report", "2030-01-07"]
    got = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=campaign["tmp"],
                         env={"PATH": "/usr/bin:/bin", "PUBLISHER_CLICK_SECRET": CLICK_SECRET})
    assert got.returncode == 1 and "2030-01-07: nothing pushed for it" in got.stderr
    assert "Traceback" not in got.stderr
