"""Subscribe with double opt-in through `publisher serve` (the real WSGI app on a real port), the
confirmation email through a real aiosmtpd (STARTTLS + AUTH), the link in Debian's Chromium, then
a real campaign; and `forget`, checked byte by byte on disk."""

from __future__ import annotations

import email
import email.policy
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from publisher.settings import load_settings
from publisher.stores.ledger import Ledger
from publisher.subscribe import app_from_settings, make_confirm_token
from publisher.subscribers import SubscriberDB, address_hash
from publisher.transports.email import run_campaign
from publisher.unsubscribe import serve_in_thread
from tests.conftest import ROOT
from tests.email_support import SECRET, Handler, free_port, write_project
from tests.test_email_delivery import cert, env, render, start_server  # noqa: F401 - fixtures

LIST_ID = "embedded-ai.example.org"


@pytest.fixture
def site(tmp_path, env):  # noqa: F811
    """An SMTP server, a project whose confirm_url points at a running `publisher serve` app."""
    server = start_server(env, Handler())
    web_port = free_port()
    cfg = write_project(tmp_path, server.port, web_port=web_port, extra=f"""
[subscribe]
url = "http://127.0.0.1:{web_port}/subscribe"
confirm_url = "http://127.0.0.1:{web_port}/confirm?token={{token}}"
per_ip_per_hour = 8
""")
    settings = load_settings(cfg)
    db = SubscriberDB(settings.path("email", "subscribers_db"))
    db.add_many([("old@example.com", "Old", "")])
    web = serve_in_thread(app_from_settings(settings), "127.0.0.1", web_port)
    yield settings, db, server, f"http://127.0.0.1:{web_port}"
    web.shutdown()
    server.stop()


def post(url: str, data: dict, headers: dict | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, data=urllib.parse.urlencode(data).encode(), headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def mails_to(server, address: str, n: int = 1, wait: float = 15) -> list[email.message.EmailMessage]:
    deadline = time.monotonic() + wait
    while True:
        got = [m for m in server.handler.messages if address in m.rcpts]
        if len(got) >= n or time.monotonic() > deadline:
            return [email.message_from_bytes(m.data, policy=email.policy.default) for m in got]
        time.sleep(0.05)


def link_in(msg) -> str:
    text = msg.get_content()
    return re.search(r"http://\S+/confirm\?token=\S+", text).group(0)


def test_subscribe_confirm_and_refusals_over_http(site):
    settings, db, server, base = site
    status, form = get(f"{base}/subscribe")
    assert status == 200 and 'lang="zh"' in form and "订阅" in form
    assert 'name="email"' in form and 'name="website"' in form and 'tabindex="-1"' in form

    # the same answer for a new, a known active and a (new) pending address
    s_new, new_page = post(f"{base}/subscribe", {"email": "new@example.com"})
    s_old, old_page = post(f"{base}/subscribe", {"email": "old@example.com"})
    assert s_new == s_old == 200
    assert new_page.replace("new@example.com", "X") == old_page.replace("old@example.com", "X")
    assert db.get("new@example.com").state == "pending"
    msg = mails_to(server, "new@example.com")[0]
    assert msg["Subject"] == "请确认订阅嵌入式AI简报" and msg["Auto-Submitted"] == "auto-replied"
    assert mails_to(server, "old@example.com", wait=0.5) == [], "an active address gets no email"
    link = link_in(msg)

    # GET shows a button and changes nothing (mail scanners follow links); POST confirms
    for _ in range(2):
        status, page = get(link)
        assert status == 200 and "<form" in page and 'method="post"' in page
    assert db.get("new@example.com").state == "pending"
    token = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)["token"][0]
    status, page = post(f"{base}/confirm", {"token": token})
    assert status == 200 and "订阅成功" in page
    assert db.get("new@example.com").state == "active"
    consent = db.consents("new@example.com")
    assert [(c["source"], c["ip"]) for c in consent] == [("form", "127.0.0.1")] and consent[0]["confirmed_at"]

    # honeypot: the same page, nothing stored, nothing sent
    status, page = post(f"{base}/subscribe", {"email": "bot@example.com", "website": "http://spam"})
    assert status == 200 and db.get("bot@example.com") is None
    assert mails_to(server, "bot@example.com", wait=0.5) == []

    # forged and expired links: a clear page, nothing changes
    pending = "later@example.com"
    post(f"{base}/subscribe", {"email": pending})
    forged = make_confirm_token("not-the-secret", LIST_ID, pending, int(time.time()) + 3600)
    expired = make_confirm_token(SECRET, LIST_ID, pending, int(time.time()) - 1)
    swapped = make_confirm_token(SECRET, LIST_ID, "x@example.com", int(time.time()) + 3600).split(".")
    swapped = ".".join([forged.split(".")[0], swapped[1], swapped[2]])
    for bad, code, words in ((forged, 400, "链接无效"), (swapped, 400, "链接无效"), ("<script>", 400, "链接无效"),
                             (expired, 410, "链接已过期")):
        for result in (get(f"{base}/confirm?token={urllib.parse.quote(bad)}"), post(f"{base}/confirm", {"token": bad})):
            assert result[0] == code and words in result[1] and "<script>" not in result[1]
    assert db.get(pending).state == "pending"

    # a bad address is refused with the form again; the rate limit answers 429
    status, page = post(f"{base}/subscribe", {"email": "not an address"})
    assert status == 400 and "请输入有效的邮箱地址" in page
    codes = [post(f"{base}/subscribe", {"email": f"flood{i}@example.com"})[0] for i in range(6)]
    assert codes[-1] == 429 and 200 in codes
    assert db.get("flood5@example.com") is None
    # behind the trusted proxy each client has its own budget
    status, _ = post(f"{base}/subscribe", {"email": "viaproxy@example.com"}, {"X-Forwarded-For": "203.0.113.9"})
    assert status == 200 and db.consents("viaproxy@example.com")[0]["ip"] == "203.0.113.9"


def test_browser_subscribe_confirm_then_the_campaign_reaches_the_reader(site, browser):
    settings, db, server, base = site
    reader = "reader@example.com"
    page = browser.new_page()
    page.goto(f"{base}/subscribe")
    box = page.locator("input[name=website]").bounding_box()
    assert box["x"] + box["width"] < 0, "the honeypot is off screen: people never fill it"
    page.fill("input[name=email]", reader)
    page.click("button[type=submit]")
    assert "请查收确认邮件" in page.locator("h1").inner_text()
    link = link_in(mails_to(server, reader)[0])
    page.goto(link)
    assert db.get(reader).state == "pending", "opening the link changes nothing"
    page.click("button[type=submit]")
    assert page.locator("h1").inner_text() == "订阅成功"
    assert db.get(reader).state == "active"
    _, rendition = render(settings)
    stats = run_campaign(rendition, settings, Ledger(settings.path("paths", "ledger")))
    assert stats.sent == 2  # old@ and the new reader
    issue_mail = [m for m in server.handler.messages if reader in m.rcpts and b"List-Unsubscribe" in m.data]
    assert len(issue_mail) == 1
    page.close()


def test_forget_leaves_only_the_hash_and_a_reimport_does_not_add_it(tmp_path, env):  # noqa: F811
    server = start_server(env, Handler())
    try:
        cfg = write_project(tmp_path, server.port, extra='\n[bounces]\naddress = "bounces@example.org"\n')
        settings = load_settings(cfg)
        victim = "Forget.Me@Example.com"
        (tmp_path / "list.csv").write_text(f"email,name\n{victim},忘记我\nkeep@example.com,Keep\n", encoding="utf-8")
        env_vars = {**os.environ, "PYTHONPATH": str(ROOT)}
        env_vars.pop("PUBLISHER_CONFIG", None)

        def run(*a):
            return subprocess.run([sys.executable, "-m", "publisher.cli", *a], cwd=tmp_path, env=env_vars,
                                  capture_output=True, text=True, timeout=60)

        assert run("subscribers", "import", "list.csv").returncode == 0
        db = SubscriberDB(settings.path("email", "subscribers_db"))
        db.set_state(victim, "unsubscribed")  # then subscribes again through the form: a consent record
        assert db.request(victim, "192.0.2.7") and db.confirm(victim, "192.0.2.7")
        _, rendition = render(settings)
        run_campaign(rendition, settings, Ledger(settings.path("paths", "ledger")))
        from publisher.bounces import verp_address
        from tests import bounce_samples as S

        sender = verp_address("bounces@example.org", SECRET, LIST_ID, "2026-11-23", db.get(victim).id, victim)
        box = tmp_path / "Maildir"
        import mailbox

        mailbox.Maildir(str(box)).add(S.exim_dsn_soft(sender, victim))
        assert run("bounces", "--mailbox", str(box)).returncode == 0
        shown = run("subscribers", "show", victim.lower()).stdout
        assert "sends:\n  2026-11-23 sent" in shown and "soft issue=2026-11-23" in shown and "192.0.2.7" in shown
        db.close()

        p = run("subscribers", "forget", victim.upper())
        assert p.returncode == 0 and victim.lower() not in p.stdout.lower()
        needles = [victim.lower().encode(), b"forget.me", "忘记我".encode()]
        for f in [*tmp_path.glob("*.db*")]:
            data = f.read_bytes().lower()
            assert not any(n in data for n in needles), f"{f.name} still holds the address"
        assert address_hash(victim).encode() in (tmp_path / "subscribers.db").read_bytes()
        assert "erased" in run("subscribers", "show", victim).stderr

        p = run("subscribers", "import", "list.csv")
        assert p.returncode == 0 and "list.csv:2: warning: this address was erased" in p.stderr
        assert victim.lower() not in p.stderr.lower()
        assert SubscriberDB(settings.path("email", "subscribers_db")).get(victim) is None
        assert SubscriberDB(settings.path("email", "subscribers_db")).get("keep@example.com").state == "active"
    finally:
        server.stop()
