"""Email delivery against a real aiosmtpd server (STARTTLS + AUTH) and the real unsubscribe
endpoint: bytes on the wire, exactly-once bookkeeping, faults, kill -9 trials."""

from __future__ import annotations

import email
import email.policy
import json
import os
import random
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from publisher import pipeline
from publisher.settings import load_settings
from publisher.stores.ledger import Ledger
from publisher.stores.mail import SENDS_SCHEMA
from publisher.subscribers import SubscriberDB
from publisher.transports import email as email_transport
from publisher.transports.base import PushContext
from publisher.transports.email import EmailTransport, campaign_status, run_campaign
from publisher.unsubscribe import make_app, make_token, serve_in_thread
from tests.conftest import ROOT
from tests.email_support import (
    CHILD,
    ISSUE,
    PASSWORD,
    SECRET,
    Handler,
    SmtpServer,
    free_port,
    make_cert,
    rendition_json,
    write_project,
)


@pytest.fixture(scope="session")
def cert(tmp_path_factory):
    return make_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def env(monkeypatch, cert):
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))
    monkeypatch.setenv("PUBLISHER_SMTP_PASSWORD", PASSWORD)
    monkeypatch.setenv("PUBLISHER_UNSUBSCRIBE_SECRET", SECRET)
    monkeypatch.delenv("PUBLISHER_CONFIG", raising=False)
    monkeypatch.setattr(email_transport, "BACKOFF_BASE", 0.02)
    return cert


def start_server(cert, handler=None, port=None, *, smtputf8=False) -> SmtpServer:
    return SmtpServer(handler or Handler(), cert[0], cert[1], port, smtputf8=smtputf8).start()


def add_subscribers(settings, n: int, domain="example.com") -> list[str]:
    db = SubscriberDB(settings.path("email", "subscribers_db"))
    emails = [f"reader{i:05d}@{domain}" for i in range(n)]
    db.add_many([(e, f"读者 {i}", "") for i, e in enumerate(emails)])
    return emails


def render(settings):
    issue, _ = pipeline.load(ISSUE)
    return issue, pipeline.render(issue, "email", settings)


def parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


# -- the happy path, byte by byte, and the unsubscribe link through the real endpoint ---------


def test_campaign_bytes_headers_parts_and_unsubscribe_roundtrip(tmp_path, env):
    server = start_server(env, Handler(pipelining=False))  # the plain MAIL / RCPT / DATA path
    web_port = free_port()
    try:
        cfg = write_project(tmp_path, server.port, web_port=web_port)
        settings = load_settings(cfg)
        emails = add_subscribers(settings, 5)
        issue, rendition = render(settings)
        ledger = Ledger(settings.path("paths", "ledger"))
        stats = run_campaign(rendition, settings, ledger)
    finally:
        server.stop()

    assert stats.sent == 5 and stats.failed == 0 and stats.remaining == 0
    got = server.handler.messages
    assert sorted(server.handler.recipients()) == emails
    assert all(m.tls and m.auth for m in got), "every message over STARTTLS after AUTH"
    assert "250-PIPELINING" not in server.handler.ehlo_features
    assert all(m.mail_from == "news@example.org" for m in got)

    by_rcpt = {m.rcpts[0]: m for m in got}
    urls = {}
    for rcpt, m in by_rcpt.items():
        raw = m.data
        head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
        assert all(len(line) <= 998 for line in head.split("\r\n"))
        assert all(len(w) <= 75 for w in re.findall(r"=\?[^?]+\?[bBqQ]\?[^?]*\?=", head))
        msg = parse(raw)
        assert msg["To"] == rcpt
        assert msg["Subject"] == rendition.metadata["subject"]
        assert msg["From"].addresses[0].addr_spec == "news@example.org"
        assert msg["Date"]
        assert msg["List-Id"].endswith("<embedded-ai.example.org>")
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert msg["Message-ID"] == email_transport.build_template(rendition, settings).message_id(rcpt)
        assert re.fullmatch(r"<2026-11-23\.[0-9a-f]{32}@example\.org>", msg["Message-ID"])
        m_unsub = re.fullmatch(r"<(http://[^>]+)>,\s+<mailto:unsubscribe@example.org>", msg["List-Unsubscribe"])
        assert m_unsub
        url = m_unsub.group(1)
        token = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["token"][0]
        assert token == make_token(SECRET, "embedded-ai.example.org", rcpt)
        assert msg.get_content_type() == "multipart/alternative"
        parts = list(msg.iter_parts())
        assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
        assert all(p["Content-Transfer-Encoding"] == "quoted-printable" for p in parts)
        text, html_part = parts[0].get_content(), parts[1].get_content()
        assert "%%UNSUBSCRIBE_URL%%" not in text and "%%UNSUBSCRIBE_URL%%" not in html_part
        assert url in text
        assert f'href="{url.replace("&", "&amp;")}"' in html_part
        # the rest is exactly the channel's rendering
        assert text.replace("\r\n", "\n").strip() == \
            rendition.parts["2026-11-23.txt"].replace("%%UNSUBSCRIBE_URL%%", url).strip()
        assert "嵌入式AI简报" in html_part
        urls[rcpt] = url
    assert len(set(urls.values())) == 5, "one personal link per recipient"

    # the links really unsubscribe, through the real WSGI app on a real port
    app = make_app(SECRET, "embedded-ai.example.org", settings.path("email", "subscribers_db"))
    web = serve_in_thread(app, "127.0.0.1", web_port)
    db = SubscriberDB(settings.path("email", "subscribers_db"))
    try:
        a, b, c = emails[0], emails[1], emails[2]
        page = urllib.request.urlopen(urls[a]).read().decode()
        assert "<form" in page and 'method="post"' in page and a in page
        assert db.get(a).state == "active", "GET only shows the confirmation page"
        # RFC 8058 one-click POST to the header URL
        req = urllib.request.Request(urls[a], data=b"List-Unsubscribe=One-Click", method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert urllib.request.urlopen(req).status == 200
        assert db.get(a).state == "unsubscribed"
        # the page's form button posts the token in the body
        token_b = urllib.parse.parse_qs(urllib.parse.urlsplit(urls[b]).query)["token"][0]
        form = urllib.parse.urlencode({"token": token_b}).encode()
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{web_port}/unsubscribe", data=form))
        assert db.get(b).state == "unsubscribed"
        # a forged token (c's address, a's signature) and garbage: 400, nothing changes
        sig_a = urllib.parse.parse_qs(urllib.parse.urlsplit(urls[a]).query)["token"][0].split(".")[1]
        forged = make_token("wrong-secret", "embedded-ai.example.org", c).split(".")[0] + "." + sig_a
        for bad in (forged, make_token("wrong-secret", "embedded-ai.example.org", c), "x.y", "<script>"):
            q = urllib.parse.quote(bad)
            for data in (None, b"List-Unsubscribe=One-Click"):
                with pytest.raises(urllib.error.HTTPError) as err:
                    urllib.request.urlopen(urllib.request.Request(
                        f"http://127.0.0.1:{web_port}/unsubscribe?token={q}", data=data))
                assert err.value.code == 400
                assert "<script>" not in err.value.read().decode()
        assert db.get(c).state == "active"
    finally:
        web.shutdown()

    # a re-run sends nothing twice and never mails the unsubscribed
    server2 = start_server(env, port=server.port)
    try:
        stats2 = run_campaign(rendition, settings, ledger)
    finally:
        server2.stop()
    assert stats2.sent == 0 and server2.handler.messages == []
    assert stats2.already == 3 and stats2.remaining == 0


# -- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize("pipelining", [True, False])
def test_451_then_250_is_retried_and_delivered_once(tmp_path, env, pipelining):
    server = start_server(env, Handler(tempfail_first_data=True, pipelining=pipelining))
    try:
        settings = load_settings(write_project(tmp_path, server.port))
        emails = add_subscribers(settings, 6)
        _, rendition = render(settings)
        ledger = Ledger(settings.path("paths", "ledger"))
        stats = run_campaign(rendition, settings, ledger)
    finally:
        server.stop()
    assert sorted(server.handler.recipients()) == emails  # each exactly once
    assert stats.sent == 6 and stats.remaining == 0
    rows = ledger.connect().execute("SELECT state, attempts FROM email_sends").fetchall()
    assert {(r[0], r[1]) for r in rows} == {("sent", 2)}, "sending marked twice: the 451 and the 250"


def test_550_for_one_recipient_is_failed_bounced_and_not_retried(tmp_path, env):
    emails_domain = "example.com"
    bad = f"reader00002@{emails_domain}"
    server = start_server(env, Handler(reject_rcpt={bad}))
    try:
        settings = load_settings(write_project(tmp_path, server.port))
        emails = add_subscribers(settings, 5)
        _, rendition = render(settings)
        ledger = Ledger(settings.path("paths", "ledger"))
        stats = run_campaign(rendition, settings, ledger)
        stats2 = run_campaign(rendition, settings, ledger)
    finally:
        server.stop()
    assert sorted(server.handler.recipients()) == [e for e in emails if e != bad]
    assert stats.failed == 1 and stats.sent == 4 and stats.remaining == 0
    row = ledger.connect().execute("SELECT state, smtp_code, last_error, attempts FROM email_sends "
                                   "WHERE email = ?", (bad,)).fetchone()
    assert (row[0], row[1], row[3]) == ("failed", 550, 0) and "no such user" in row[2]
    assert campaign_status(ledger, "2026-11-23") == {"sent": 4, "failed": 1}
    assert SubscriberDB(settings.path("email", "subscribers_db")).get(bad).state == "bounced"
    assert stats2.sent == 0 and stats2.failed == 0


def test_server_stopped_mid_run_then_second_run_completes_exactly(tmp_path, env):
    handler = Handler(stop_after=7)
    server = start_server(env, handler)
    settings = load_settings(write_project(tmp_path, server.port, connections=1, max_retries=2))
    emails = add_subscribers(settings, 20)
    _, rendition = render(settings)
    ledger = Ledger(settings.path("paths", "ledger"))

    import threading

    def stopper():
        handler.stop_now.wait(30)
        server.stop()

    t = threading.Thread(target=stopper)
    t.start()
    stats = run_campaign(rendition, settings, ledger)
    t.join()
    assert stats.aborted and "cannot connect" in stats.aborted
    assert stats.sent == 7 and stats.remaining == 13
    first = list(handler.recipients())
    assert len(first) == 7

    server2 = start_server(env, port=server.port)
    try:
        stats2 = run_campaign(rendition, settings, ledger)
    finally:
        server2.stop()
    received = first + server2.handler.recipients()
    assert sorted(received) == emails, "received == active subscribers exactly: no loss, no duplicate"
    assert stats2.sent == 13 and stats2.already == 7 and stats2.remaining == 0


def test_push_raises_transport_error_when_server_down_and_names_resume(tmp_path, env):
    port = free_port()  # nothing listens here
    settings = load_settings(write_project(tmp_path, port, max_retries=1))
    add_subscribers(settings, 3)
    issue, rendition = render(settings)
    ledger = Ledger(settings.path("paths", "ledger"))
    ctx = PushContext(settings=settings, ledger=ledger, issue=issue, progress=lambda d, t: None)
    from publisher.errors import TransportError

    with pytest.raises(TransportError) as err:
        EmailTransport().push(rendition, ctx)
    assert "remaining 3" in str(err.value) and "again to resume" in str(err.value)
    assert PASSWORD not in str(err.value)


@pytest.mark.parametrize("policy", ["resend", "skip"])
def test_connection_lost_after_final_dot_follows_the_policy(tmp_path, env, policy):
    victim = "reader00001@example.com"
    server = start_server(env, Handler(drop_after_data={victim}))
    try:
        settings = load_settings(write_project(tmp_path, server.port))
        emails = add_subscribers(settings, 4)
        _, rendition = render(settings)
        ledger = Ledger(settings.path("paths", "ledger"))
        stats = run_campaign(rendition, settings, ledger, ambiguous=policy)
    finally:
        server.stop()
    got = Counter(server.handler.recipients())
    assert set(got) == set(emails)
    ids = [parse(m.data)["Message-ID"] for m in server.handler.messages if m.rcpts == [victim]]
    if policy == "resend":  # nobody skipped; the copy carries the same Message-ID
        assert got[victim] == 2 and len(set(ids)) == 1
        assert campaign_status(ledger, "2026-11-23") == {"sent": 4}
    else:  # never twice; recorded as ambiguous
        assert got[victim] == 1 and stats.ambiguous == [victim]
        assert campaign_status(ledger, "2026-11-23") == {"sent": 3, "ambiguous": 1}
    assert stats.remaining == 0


def test_rate_cap(tmp_path, env):
    server = start_server(env)
    try:
        settings = load_settings(write_project(tmp_path, server.port, extra="rate_per_second = 20"))
        add_subscribers(settings, 11)
        _, rendition = render(settings)
        t0 = time.monotonic()
        stats = run_campaign(rendition, settings, Ledger(settings.path("paths", "ledger")))
        took = time.monotonic() - t0
    finally:
        server.stop()
    assert stats.sent == 11 and took >= 0.5  # 11 messages at 20/s: at least 10 intervals of 50 ms


def test_ambiguous_rows_policy_resend_and_skip(tmp_path, env):
    server = start_server(env)
    try:
        for policy in ("resend", "skip"):
            settings = load_settings(write_project(tmp_path / policy, server.port))
            emails = add_subscribers(settings, 4, domain=f"{policy}.example.com")
            _, rendition = render(settings)
            ledger = Ledger(settings.path("paths", "ledger"))
            ledger.ensure(SENDS_SCHEMA)
            # an earlier run died inside the window for emails[1]
            ledger.connect().execute(
                "INSERT INTO email_sends (issue, email, state, attempts, updated_at) "
                "VALUES ('2026-11-23', ?, 'sending', 1, 'x')", (emails[1],))
            stats = run_campaign(rendition, settings, ledger, ambiguous=policy)
            assert stats.ambiguous == [emails[1]]
            assert "ambiguous" in stats.summary()
            got = [r for r in server.handler.recipients() if r.endswith(f"@{policy}.example.com")]
            if policy == "resend":
                assert sorted(got) == emails
            else:
                assert sorted(got) == [e for i, e in enumerate(emails) if i != 1]
                assert campaign_status(ledger, "2026-11-23") == {"sent": 3, "ambiguous": 1}
    finally:
        server.stop()


def test_test_copy_and_dry_run_leave_the_campaign_ledger_alone(tmp_path, env, capsys):
    server = start_server(env)
    try:
        settings = load_settings(write_project(tmp_path, server.port))
        add_subscribers(settings, 3)
        issue, rendition = render(settings)
        ledger = Ledger(settings.path("paths", "ledger"))
        ctx = PushContext(settings=settings, ledger=ledger, issue=issue, options={"to": "editor@example.net"})
        result = EmailTransport().push(rendition, ctx)
        dry = EmailTransport().push(rendition, PushContext(settings=settings, ledger=ledger, issue=issue,
                                                           dry_run=True))
    finally:
        server.stop()
    assert [m.rcpts for m in server.handler.messages] == [["editor@example.net"]]
    msg = parse(server.handler.messages[0].data)
    assert msg["Subject"] == "[TEST] " + rendition.metadata["subject"]
    assert "editor@example.net" in result.summary
    assert campaign_status(ledger, issue.slug if hasattr(issue, "slug") else "2026-11-23") == {}
    assert "3 active subscriber(s)" in dry.summary
    out = capsys.readouterr().out
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in out and "To: reader00000@example.com" in out
    # decoded for a person: the text part as written, no quoted-printable or base64
    assert rendition.parts[f"{issue.slug}.txt"].splitlines()[0] in out
    assert "=E5" not in out and "=?utf-8?" not in out and "[text/html part:" in out
    assert "Subject: " + rendition.metadata["subject"] in out


# -- kill -9 trials -------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_trials_no_loss_duplicates_within_window(tmp_path, env):
    """Kill the sending process at random points; re-run; count what the server received."""
    handler = Handler(data_delay=0.005)
    server = start_server(env, handler)
    connections, n = 4, 300
    rng = random.Random(20261123)
    report = []
    try:
        base_settings = load_settings(write_project(tmp_path / "base", server.port))
        _, rendition = render(base_settings)
        rjson = tmp_path / "rendition.json"
        rjson.write_text(rendition_json(rendition), encoding="utf-8")
        script = tmp_path / "child.py"
        script.write_text(CHILD, encoding="utf-8")
        for trial in range(20):
            folder = tmp_path / f"trial{trial}"
            cfg = write_project(folder, server.port, connections=connections)
            settings = load_settings(cfg)
            domain = f"t{trial}.example.com"
            emails = add_subscribers(settings, n, domain=domain)
            env_vars = {**os.environ, "PYTHONPATH": str(ROOT)}
            child = subprocess.Popen([sys.executable, str(script), str(cfg), str(rjson)], env=env_vars,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            # wait for the first accepted message of this trial, then kill at a random moment
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(
                    r.endswith(domain) for r in handler.recipients()):
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.3))
            child.kill()
            child.wait()
            before = Counter(r for r in handler.recipients() if r.endswith(domain))
            ledger = Ledger(settings.path("paths", "ledger"))
            stats = run_campaign(rendition, settings, ledger)
            got = Counter(r for r in handler.recipients() if r.endswith(domain))
            losses = [e for e in emails if got[e] == 0]
            dups = sum(c - 1 for c in got.values() if c > 1)
            report.append({"trial": trial, "before_kill": sum(before.values()),
                           "ambiguous": len(stats.ambiguous), "duplicates": dups, "losses": len(losses)})
            assert not losses, report[-1]
            assert dups <= len(stats.ambiguous) <= connections, report[-1]
            assert stats.resent == len(stats.ambiguous) and f"ambiguous-resent {stats.resent}" in stats.summary()
            assert stats.remaining == 0
    finally:
        server.stop()
    print("\nkill -9 trials:", json.dumps(report))
    assert sum(1 for r in report if 0 < r["before_kill"] < n) >= 16, "kills land mid-campaign"


# -- `publisher push ISSUE --channel email` end to end (push.py → get_transport → EmailTransport) -


def _cli(cwd: Path, *args: str):
    env_vars = {**os.environ, "PYTHONPATH": str(ROOT)}
    env_vars.pop("PUBLISHER_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "publisher.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env_vars)


def test_publisher_push_channel_email_end_to_end(tmp_path, env):
    server = start_server(env, Handler(reject_rcpt={"reader00003@example.com"}))
    try:
        cfg = write_project(tmp_path, server.port)
        settings = load_settings(cfg)
        emails = add_subscribers(settings, 8)
        # a test copy first: one message, the campaign untouched
        p = _cli(tmp_path, "push", str(ISSUE), "--channel", "email", "--to", "editor@example.net")
        assert p.returncode == 0, p.stderr
        assert server.handler.recipients() == ["editor@example.net"]
        p = _cli(tmp_path, "push", str(ISSUE), "--channel", "email", "--dry-run")
        assert p.returncode == 0, p.stderr
        assert "8 active subscriber(s)" in p.stdout + p.stderr and "Message-ID: <2026-11-23." in p.stdout
        p = _cli(tmp_path, "push", str(ISSUE), "--channel", "email")
        assert p.returncode == 0, p.stderr
        assert "sent 7, failed 1, bounced 1, ambiguous-resent 0, skipped 0 (done earlier), remaining 0" in p.stdout + p.stderr
        assert "email: 8/8" in p.stderr  # plain progress lines when not on a TTY
        assert sorted(server.handler.recipients()[1:]) == [e for e in emails if e != "reader00003@example.com"]
        p = _cli(tmp_path, "status", "2026-11-23")
        assert p.returncode == 0 and "email" in p.stdout and "done" in p.stdout
        flat = " ".join(p.stdout.replace("│", " ").split())
        assert "sent 7" in flat and "failed 1" in flat and "bounced 1" in flat and "ambiguous-resent 0" in flat
        p = _cli(tmp_path, "subscribers", "sends", "2026-11-23")
        assert "failed=1 sent=7" in p.stdout and "reader00003@example.com,failed,550," in p.stdout
        for out in (p.stdout, p.stderr):
            assert PASSWORD not in out and SECRET not in out
        ledger_bytes = (tmp_path / "publisher.db").read_bytes() + b"".join(
            f.read_bytes() for f in tmp_path.glob("publisher.db-wal"))
        assert PASSWORD.encode() not in ledger_bytes and SECRET.encode() not in ledger_bytes
    finally:
        server.stop()


def test_publisher_serve_command_runs_and_needs_the_secret(tmp_path, env):
    port = free_port()
    cfg = write_project(tmp_path, 25, web_port=port,  # (serve refuses the placeholder confirm_url)
                        extra=f'\n[subscribe]\nconfirm_url = "http://127.0.0.1:{port}/confirm?token={{token}}"\n')
    settings = load_settings(cfg)
    add_subscribers(settings, 1)
    env_vars = {**os.environ, "PYTHONPATH": str(ROOT)}
    env_vars.pop("PUBLISHER_CONFIG", None)
    no_secret = {k: v for k, v in env_vars.items() if k != "PUBLISHER_UNSUBSCRIBE_SECRET"}
    p = subprocess.run([sys.executable, "-m", "publisher.cli", "serve", "--port", str(port)], cwd=tmp_path,
                       env=no_secret, capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "PUBLISHER_UNSUBSCRIBE_SECRET" in p.stderr and "Traceback" not in p.stderr
    proc = subprocess.Popen([sys.executable, "-m", "publisher.cli", "serve", "--port", str(port)], cwd=tmp_path,
                            env=env_vars, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline, proc.stderr.read1().decode() if proc.poll() else "no server"
                time.sleep(0.1)
        assert body == b"ok\n"
        url = f"http://127.0.0.1:{port}/unsubscribe?token=" + make_token(SECRET, "embedded-ai.example.org",
                                                                          "reader00000@example.com")
        req = urllib.request.Request(url, data=b"List-Unsubscribe=One-Click", method="POST")
        assert urllib.request.urlopen(req, timeout=5).status == 200
        assert SubscriberDB(settings.path("email", "subscribers_db")).get("reader00000@example.com").state \
            == "unsubscribed"
    finally:
        proc.terminate()
        proc.wait(10)
    logs = proc.stderr.read().decode() + proc.stdout.read().decode()
    assert "token=" not in logs, "tokens are never logged"


# -- failures classified: the server's fault is not the readers' ---------------------------------


def _subscriber_states(settings) -> Counter:
    db = SubscriberDB(settings.path("email", "subscribers_db"))
    return Counter(s.state for s in db.iter(None))


@pytest.mark.parametrize("reply", [
    "550 5.7.1 Relaying denied",  # a misconfigured relay: a campaign fault at once
    "550 5.1.1 Recipient address rejected",  # the same 'unknown mailbox' for everybody
    "550 Requested action not taken: mailbox unavailable",  # the same, without an enhanced code
])
def test_server_refusing_everybody_bounces_nobody_fails_the_push_and_a_rerun_delivers(tmp_path, env, reply):
    handler = Handler(reject_all=reply)
    server = start_server(env, handler)
    cfg = write_project(tmp_path, server.port)
    settings = load_settings(cfg)
    emails = add_subscribers(settings, 200)
    try:
        p = _cli(tmp_path, "push", str(ISSUE), "--channel", "email")
    finally:
        server.stop()
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "circuit breaker" in out and "nobody was marked bounced" in out and "Traceback" not in out
    assert re.search(r"sent 0, failed 0, bounced 0, ambiguous-resent 0", out), out
    assert _subscriber_states(settings) == {"active": 200}
    ledger = Ledger(settings.path("paths", "ledger"))
    assert ledger.get("2026-11-23", "email").state == "failed"
    assert set(campaign_status(ledger, "2026-11-23")) <= {"pending"}, "nothing final: all to be resent"
    assert handler.messages == []
    # the relay fixed: a re-run delivers to everyone exactly once
    server2 = start_server(env, port=server.port)
    try:
        p = _cli(tmp_path, "push", str(ISSUE), "--channel", "email")
    finally:
        server2.stop()
    assert p.returncode == 0, p.stdout + p.stderr
    assert sorted(server2.handler.recipients()) == emails
    assert ledger.get("2026-11-23", "email").state == "done"


def test_isolated_server_fault_keeps_the_row_pending_and_the_push_failed(tmp_path, env):
    class PolicyOnce(Handler):
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if address == "reader00004@example.com":
                return "554 5.7.1 rejected by local policy"
            return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    server = start_server(env, PolicyOnce(reject_rcpt={"reader00002@example.com"}))
    try:
        settings = load_settings(write_project(tmp_path, server.port))
        add_subscribers(settings, 10)
        _, rendition = render(settings)
        ledger = Ledger(settings.path("paths", "ledger"))
        stats = run_campaign(rendition, settings, ledger)
    finally:
        server.stop()
    assert (stats.sent, stats.failed, stats.faults, stats.bounced, stats.remaining) == (8, 1, 1, 1, 1)
    assert stats.tripped is None
    states = _subscriber_states(settings)
    assert states == {"active": 9, "bounced": 1}  # only the unknown mailbox
    row = ledger.connect().execute("SELECT state, last_error FROM email_sends WHERE email = ?",
                                   ("reader00004@example.com",)).fetchone()
    assert row[0] == "pending" and "5.7.1" in row[1]


@pytest.mark.parametrize("code, message, kind", [
    (550, "RCPT TO: 550 5.1.1 <a@b.c>: user unknown", "bounce"),
    (550, "RCPT TO: 550 5.2.1 mailbox disabled", "bounce"),
    (552, "RCPT TO: 552 5.2.2 mailbox full", "recipient"),
    (550, "RCPT TO: 550 5.7.1 relay access denied", "campaign"),
    (554, "RCPT TO: 554 relay access denied", "campaign"),
    (553, "RCPT TO: 553 5.1.8 sender address domain does not exist", "campaign"),
    (550, "MAIL FROM: 550 5.1.0 sender rejected", "campaign"),
    (500, "end of DATA: 500 Line too long", "campaign"),
    (554, "end of DATA: 554 5.6.0 message content rejected", "campaign"),
    (550, "RCPT TO: 550 no such user", "bounce"),
    (550, "RCPT TO: 550 5.3.0 system not accepting", "campaign"),
    (None, "address 'ü@x' needs SMTPUTF8", "recipient"),
])
def test_classification(code, message, kind):
    assert email_transport.classify(code, message) == kind


# -- headers: RFC 5322 folding, RFC 2047 words, SMTPUTF8 -------------------------------------


def test_sixty_topic_subject_goes_through_aiosmtpd_and_decodes_back(tmp_path, env):
    server = start_server(env)
    try:
        settings = load_settings(write_project(tmp_path, server.port))
        add_subscribers(settings, 2)
        _, rendition = render(settings)
        title = "嵌入式AI简报 (2026-11-23)：" + "/".join(f"端侧INT4量化专题{i}" for i in range(60))
        rendition = type(rendition)(**{**rendition.__dict__, "metadata": {**rendition.metadata, "subject": title}})
        ledger = Ledger(settings.path("paths", "ledger"))
        stats = run_campaign(rendition, settings, ledger)
    finally:
        server.stop()
    assert len(title.encode()) > 998
    assert stats.sent == 2 and stats.failed == 0 and stats.faults == 0
    for m in server.handler.messages:
        assert parse(m.data)["Subject"] == title
        head = m.data.split(b"\r\n\r\n", 1)[0]
        assert max(len(line) for line in head.split(b"\r\n") if not line.startswith(b"List-Unsub")) <= 78


@pytest.mark.parametrize("smtputf8", [False, True])
def test_non_ascii_address_needs_smtputf8(tmp_path, env, smtputf8):
    server = start_server(env, smtputf8=smtputf8)
    try:
        settings = load_settings(write_project(tmp_path, server.port))
        emails = add_subscribers(settings, 3)
        SubscriberDB(settings.path("email", "subscribers_db")).add_many([("üser@example.com", "Ü", "")])
        _, rendition = render(settings)
        ledger = Ledger(settings.path("paths", "ledger"))
        stats = run_campaign(rendition, settings, ledger)
    finally:
        server.stop()
    got = server.handler.recipients()
    assert sorted(e for e in got if e.isascii()) == emails
    db = SubscriberDB(settings.path("email", "subscribers_db"))
    assert db.get("üser@example.com").state == "active", "never bounced for our server's limits"
    if smtputf8:
        assert "üser@example.com" in got and stats.sent == 4
        m = next(m for m in server.handler.messages if m.rcpts == ["üser@example.com"])
        assert "SMTPUTF8" in m.mail_options
        assert all("SMTPUTF8" not in x.mail_options for x in server.handler.messages if x is not m)
    else:
        assert "üser@example.com" not in got and stats.failed == 1 and stats.remaining == 0
        err = ledger.connect().execute("SELECT last_error FROM email_sends WHERE email = ?",
                                       ("üser@example.com",)).fetchone()[0]
        assert "SMTPUTF8" in err and "not bounced" in err


# -- two senders at once: the lease ----------------------------------------------------------------


def test_two_campaigns_started_together_send_each_message_once(tmp_path, env):
    # 400 messages at 20 ms each over 4 connections: the campaign takes ~2 s, so the two processes,
    # started together, are sure to overlap even on a loaded machine (with 2 ms each, a slow start
    # of the second could find the first already done: no duplicate either, but no race tested)
    handler = Handler(data_delay=0.02)
    server = start_server(env, handler)
    try:
        cfg = write_project(tmp_path, server.port)
        emails = add_subscribers(load_settings(cfg), 400)
        env_vars = {**os.environ, "PYTHONPATH": str(ROOT)}
        env_vars.pop("PUBLISHER_CONFIG", None)
        cmd = [sys.executable, "-m", "publisher", "push", str(ISSUE), "--channel", "email"]
        procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env_vars, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
        codes = [p.returncode for p in procs]
        # whoever lost (busy) runs again after the winner: nothing left to send
        again = _cli(tmp_path, "push", str(ISSUE), "--channel", "email")
    finally:
        server.stop()
    got = Counter(handler.recipients())
    assert sorted(got) == emails and max(got.values()) == 1, "0 lost, 0 duplicates"
    assert sorted(codes) == [0, 1], outs
    loser_pid = procs[codes.index(1)].pid
    winner_pid = procs[codes.index(0)].pid
    loser_err = outs[codes.index(1)][0] + outs[codes.index(1)][1]
    assert f"busy: 2026-11-23 email is being sent by another process: pid {winner_pid}" in loser_err, loser_err
    assert str(loser_pid) not in loser_err.split("pid ", 1)[1][:10]
    assert again.returncode == 0 and "skipped: already done" in again.stdout


def test_campaign_durations_are_summarised_in_constant_memory():
    """The per-message windows (`sending` → `sent` committed) of a campaign of any size: quantiles
    within 2 % of the exact ones, the exact maximum, and a bounded number of buckets (they were
    two lists of a float per message: 64 MB for a million recipients)."""
    import random

    from publisher.transports.email import Durations

    rng = random.Random(5)
    values = [rng.lognormvariate(-4, 1.2) for _ in range(200_000)]
    d = Durations()
    for v in values:
        d.add(v)
    exact = sorted(values)
    for q in (0.5, 0.9, 0.99):
        want = exact[int(q * (len(exact) - 1))]
        assert abs(d.quantile(q) - want) / want < 0.02, (q, d.quantile(q), want)
    assert d.quantile(1) == d.max == exact[-1] and d.count == len(values)
    assert len(d.buckets) < 1200  # 0.1 µs to an hour: bounded whatever the count
    assert Durations().quantile(0.5) is None and not Durations()
