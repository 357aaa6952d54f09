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
    request = int(urllib.parse.unquote(link_in(mails_to(server, pending)[0])).split("token=")[1].split(".")[1])
    forged = make_confirm_token("not-the-secret", LIST_ID, pending, request, int(time.time()) + 3600)
    expired = make_confirm_token(SECRET, LIST_ID, pending, request, int(time.time()) - 1)
    swapped = make_confirm_token(SECRET, LIST_ID, "x@example.com", request, int(time.time()) + 3600).split(".")
    swapped = ".".join([forged.split(".")[0], *swapped[1:]])
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


def _token(link: str) -> str:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)["token"][0]


def test_a_confirmation_link_is_single_use_and_dies_with_the_pending_state_it_was_issued_for(site):
    """Issue 21 item 13: an old confirmation link never re-activates a reader who unsubscribed
    since — through the real app: the form, the emailed link, the one-click unsubscribe."""
    settings, db, server, base = site
    from publisher.unsubscribe import make_token

    reader = "twice@example.com"
    assert post(f"{base}/subscribe", {"email": reader})[0] == 200
    first = _token(link_in(mails_to(server, reader)[0]))
    assert post(f"{base}/confirm", {"token": first})[0] == 200 and db.get(reader).state == "active"
    status, page = post(f"{base}/confirm", {"token": first})
    assert status == 400 and "链接无效" in page, "a confirmation link is spent once used"

    # the reader unsubscribes (one click from a campaign mail); the old link must not undo it
    unsub = urllib.parse.quote(make_token(SECRET, LIST_ID, reader), safe="")
    req = urllib.request.Request(f"{base}/unsubscribe?token={unsub}", data=b"List-Unsubscribe=One-Click")
    assert urllib.request.urlopen(req, timeout=10).status == 200
    assert db.get(reader).state == "unsubscribed"
    for result in (get(f"{base}/confirm?token={urllib.parse.quote(first)}"), post(f"{base}/confirm", {"token": first})):
        assert result[0] == 400 and "链接无效" in result[1]
    assert db.get(reader).state == "unsubscribed"

    # asking again sends a new link; the old one stays dead, the new one works once
    assert post(f"{base}/subscribe", {"email": reader})[0] == 200
    second = _token(link_in(mails_to(server, reader, n=2)[1]))
    assert second != first and db.get(reader).state == "pending"
    assert post(f"{base}/confirm", {"token": first})[0] == 400 and db.get(reader).state == "pending"
    assert post(f"{base}/confirm", {"token": second})[0] == 200 and db.get(reader).state == "active"

    # a link issued while pending dies when the address is removed before it is used, and a
    # newer request's link replaces an older one
    other = "pending-then-removed@example.com"
    post(f"{base}/subscribe", {"email": other})
    stale = _token(link_in(mails_to(server, other)[0]))
    db.set_state(other, "unsubscribed")  # `publisher subscribers remove`
    assert post(f"{base}/confirm", {"token": stale})[0] == 400 and db.get(other).state == "unsubscribed"
    post(f"{base}/subscribe", {"email": other})
    newer = _token(link_in(mails_to(server, other, n=2)[1]))
    assert post(f"{base}/confirm", {"token": stale})[0] == 400, "a replaced link stays dead"
    assert db.get(other).state == "pending"
    assert post(f"{base}/confirm", {"token": newer})[0] == 200 and db.get(other).state == "active"


def test_hostile_forms_get_400_or_413_never_500(site, caplog):
    """Issue 21 item 18: too many fields, huge fields, a huge body, bad UTF-8, a malformed
    Content-Length, none at all — answered 4xx by the real server, no traceback in the log."""
    import http.client
    import logging

    settings, db, server, base = site
    port = int(base.rsplit(":", 1)[1])

    def raw(path: str, body: bytes, headers: dict) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.putrequest("POST", path)
            for k, v in headers.items():
                conn.putheader(k, v)
            conn.endheaders()
            if body:
                conn.send(body)
            return conn.getresponse().status
        finally:
            conn.close()

    form = {"Content-Type": "application/x-www-form-urlencoded"}
    many = "&".join(f"f{i}=x" for i in range(11)).encode()
    caplog.set_level(logging.DEBUG)
    for path in ("/subscribe", "/confirm", "/unsubscribe"):
        cases = [
            (many, {**form, "Content-Length": str(len(many))}, 400),
            (b"email=" + b"a" * 5000, {**form, "Content-Length": "5006"}, 413),
            (b"x" * 100_000, {**form, "Content-Length": "100000"}, 413),
            (b"email=\xff\xfe@example.com", {**form, "Content-Length": "20"}, 400),
            (b"email=%ZZ%&&&==", {**form, "Content-Length": "15"}, 400),
            (b"", form, 400),
        ]
        for body, headers, expected in cases:
            got = raw(path, body, headers)
            if path == "/unsubscribe" and expected == 400:
                expected = 400  # no token anywhere: the unsubscribe page says the link is invalid
            assert got == expected, (path, body[:30], got)
    chunked = raw("/subscribe", b"5\r\nemail\r\n0\r\n\r\n", {**form, "Transfer-Encoding": "chunked"})
    assert chunked == 400
    assert "Traceback" not in caplog.text and "Error" not in caplog.text


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
        request = db.request(victim, "192.0.2.7")
        assert request is not None and db.confirm(victim, request, "192.0.2.7")
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
