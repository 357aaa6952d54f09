"""The provider path keeps every promise the SMTP path keeps (issue 21 on issue 23's transports),
against the local provider servers (tests/provider_servers.py), the real unsubscribe endpoint,
the real CLI and a real full filesystem:

* an empty list is an error, never done;
* a lost ledger never re-sends: push refuses, `--after-ledger-loss skip|resend` decide;
* an unsubscribe answered 200 before a call is built is never sent;
* a provider failing for everyone (5xx on every call, every message refused the same way)
  stops the push loudly, resumable, nobody marked failed;
* a full disk / a damaged ledger: a clear error naming the file, and a re-run finishes once;
* `status` and `push --dry-run` say which provider carried the push.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from publisher.push import push_issue
from publisher.stores import open_ledger
from publisher.stores.ledger import Ledger
from publisher.stores.mail import MailStore
from publisher.subscribers import open_db
from publisher.transports.providers import base as pbase
from publisher.transports.providers.campaign import ProviderCampaign
from publisher.unsubscribe import make_app, make_token, serve_in_thread
from tests import provider_servers as ps
from tests.email_support import ISSUE, SECRET
from tests.provider_support import add_subscribers, provider_env, rendition, settings_for
from tests.test_email_delivery import _cli
from tests.test_email_faults import _push_proc, fill, tmpfs

SLUG = "2026-11-23"
LIST_ID = "embedded-ai.example.org"


@pytest.fixture
def env(monkeypatch):
    provider_env(monkeypatch)
    monkeypatch.setattr(pbase, "BACKOFF_BASE", 0.01)


@pytest.fixture
def server(request):
    s = ps.start(getattr(request, "param", "postmark"))
    yield s
    s.stop()


def run(settings, **kw):
    return ProviderCampaign(rendition(settings), settings, open_ledger(settings), secret=SECRET, **kw).run()


def clean(p) -> str:
    out = p.stdout + p.stderr
    assert "Traceback" not in out and "Exception in thread" not in out, out
    return out


# -- an empty list -----------------------------------------------------------------------------------


def test_an_empty_list_is_an_error_never_done_and_later_readers_get_the_issue(tmp_path, env, server):
    settings = settings_for(tmp_path, "postmark", server.base)
    open_db(settings).close()
    p = _cli(tmp_path, "push", str(ISSUE), "--channel", "email")
    out = clean(p)
    assert p.returncode == 1 and "no active subscribers" in out, out
    assert Ledger(settings.path("paths", "ledger")).get(SLUG, "email").state == "failed"
    emails = add_subscribers(settings, 3)
    p = _cli(tmp_path, "push", str(ISSUE), "--channel", "email")
    assert p.returncode == 0, clean(p)
    assert server.recipients() == Counter(emails)


# -- a lost ledger -----------------------------------------------------------------------------------------


def _finished(tmp_path, server, provider: str, n: int = 12) -> tuple:
    settings = settings_for(tmp_path, provider, server.base, batch_size=5)
    emails = add_subscribers(settings, n)
    p = _cli(tmp_path, "push", str(ISSUE), "--channel", "email")
    assert p.returncode == 0, clean(p)
    assert server.recipients() == Counter(emails)
    return settings, emails


def _lose(ledger: Path, how: str) -> None:
    for extra in (Path(f"{ledger}-wal"), Path(f"{ledger}-shm")):
        extra.unlink(missing_ok=True)
    if how == "emptied":
        ledger.write_bytes(b"")
    else:
        ledger.unlink()


@pytest.mark.parametrize("how", ["emptied", "deleted"])
def test_a_lost_ledger_never_resends_and_skip_records_without_sending(tmp_path, env, server, how):
    settings, emails = _finished(tmp_path, server, "postmark")
    ledger = settings.path("paths", "ledger")
    _lose(ledger, how)
    p = _cli(tmp_path, "status", "--format", "json")
    (row,) = json.loads(p.stdout)["pushes"]
    assert row["state"] == "unknown" and "subscribers database" in row["last_error"], row
    p = _cli(tmp_path, "push", str(ISSUE), "--channel", "email")
    out = clean(p)
    assert p.returncode == 1 and "nothing was sent" in out and str(ledger) in out, out
    assert "--after-ledger-loss" in out
    assert sum(server.recipients().values()) == len(emails), "nobody mailed twice"
    p = _cli(tmp_path, "push", str(ISSUE), "--channel", "email", "--after-ledger-loss", "skip")
    assert p.returncode == 0, clean(p)
    p = _cli(tmp_path, "push", str(ISSUE), "--channel", "email")
    assert p.returncode == 0 and "skipped: already done" in p.stdout, clean(p)
    assert sum(server.recipients().values()) == len(emails)


@pytest.mark.parametrize("server", ["mailgun"], indirect=True)
def test_after_ledger_loss_resend_sends_again_on_purpose(tmp_path, env, server):
    settings, emails = _finished(tmp_path, server, "mailgun", n=6)
    _lose(settings.path("paths", "ledger"), "deleted")
    p = _cli(tmp_path, "push", str(ISSUE), "--channel", "email", "--after-ledger-loss", "resend")
    assert p.returncode == 0, clean(p)
    assert server.recipients() == Counter(dict.fromkeys(emails, 2))
    p = _cli(tmp_path, "push", str(ISSUE), "--channel", "email")
    assert p.returncode == 0 and "skipped: already done" in p.stdout  # bound to the new ledger now


def test_an_unfinished_campaign_is_not_marked_done(tmp_path, env, server):
    """A run the breaker stopped leaves the subscribers database's mark at `sending`."""
    server.script = ["refuse"] * 3
    settings = settings_for(tmp_path, "postmark", server.base, batch_size=5, concurrency=1)
    add_subscribers(settings, 20)
    stats = run(settings)
    assert stats.tripped and stats.remaining == 20
    assert open_db(settings).campaign(SLUG).state == "sending"
    assert run(settings).sent == 20 and open_db(settings).campaign(SLUG).state == "done"


# -- an unsubscribe acknowledged mid-campaign ------------------------------------------------------------------


@pytest.mark.parametrize("server", ["mailgun"], indirect=True)
def test_unsubscribes_answered_mid_campaign_are_never_sent(tmp_path, env, server):
    """200 readers in calls of 5 to a slowed provider; 30 readers ahead in the queue press one-click
    unsubscribe (RFC 8058 POST): no call that reached the provider after a 200 carries them."""
    server.delay = 0.05
    settings = settings_for(tmp_path, "mailgun", server.base, batch_size=5, concurrency=1)
    emails = add_subscribers(settings, 200)
    web = serve_in_thread(make_app(SECRET, LIST_ID, settings.path("email", "subscribers_db")))
    result: dict = {}
    sender = threading.Thread(target=lambda: result.update(stats=run(settings)))
    try:
        sender.start()
        deadline = time.monotonic() + 60
        while len(server.accepted) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        leaving = emails[60:120:2]
        acked: dict[str, float] = {}
        for address in leaving:
            req = urllib.request.Request(
                f"http://127.0.0.1:{web.server_port}/unsubscribe?token={make_token(SECRET, LIST_ID, address)}",
                data=b"List-Unsubscribe=One-Click", method="POST")
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert resp.status == 200
            acked[address] = time.monotonic()
        sender.join(120)
    finally:
        web.shutdown()
    stats = result["stats"]
    arrived = {row["to"]: row["at"] for row in server.accepted}
    late = [a for a in leaving if a in arrived and arrived[a] > acked[a]]
    assert late == [], f"calls that reached the provider after the 200: {late}"
    gone = [a for a in leaving if a not in arrived]
    assert len(gone) >= 25, "they were ahead in the queue"
    assert stats.withdrawn == len(gone) and "unsubscribed during the campaign" in stats.summary()
    assert all(server.recipients()[e] == 1 for e in emails if e not in leaving)
    assert stats.remaining == 0 and stats.aborted is None, stats.summary()


# -- a provider failing for everyone ------------------------------------------------------------------------------


@pytest.mark.parametrize("server", ["postmark", "mailgun", "ses"], indirect=True)
def test_a_provider_answering_5xx_to_every_call_stops_the_push_loudly_resumable(tmp_path, env, server):
    name = next(k for k, v in ps.HANDLERS.items() if v is server.RequestHandlerClass)
    server.script = ["500"] * 1000
    settings = settings_for(tmp_path, name, server.base, batch_size=5, concurrency=1, max_retries=1)
    emails = add_subscribers(settings, 40)
    report = push_issue(settings, ISSUE, ["email"])
    (outcome,) = report.outcomes
    assert outcome.failed and "circuit breaker" in outcome.message and "Run the push again" in outcome.message
    assert server.calls <= 3 * 2 + 1, "stopped after three calls in a row failed, not after every batch"
    ledger = Ledger(settings.path("paths", "ledger"))
    assert ledger.get(SLUG, "email").state == "failed"
    assert "failed" not in MailStore(ledger).counts(SLUG) and not server.accepted
    assert open_db(settings).count("active") == 40  # nobody failed, nobody bounced
    server.script = []
    assert push_issue(settings, ISSUE, ["email"]).ok
    assert server.recipients() == Counter(emails)


@pytest.mark.parametrize("n", [8, 60])
def test_every_message_refused_the_same_way_is_the_senders_problem(tmp_path, env, server, n):
    """Postmark answers 406 for every message, each naming its own address (as Postmark does):
    most of the run failing one way is not the readers' fault — nobody is left failed; after the
    fix a re-run sends everyone."""
    settings = settings_for(tmp_path, "postmark", server.base, batch_size=4, concurrency=2)
    emails = add_subscribers(settings, n)
    server.reject = set(emails)
    report = push_issue(settings, ISSUE, ["email"])
    (outcome,) = report.outcomes
    assert outcome.failed and "circuit breaker" in outcome.message and "failed the same way" in outcome.message
    ledger = Ledger(settings.path("paths", "ledger"))
    assert "failed" not in MailStore(ledger).counts(SLUG)
    server.reject = {emails[1]}
    report = push_issue(settings, ISSUE, ["email"])
    assert report.ok, report.outcomes[0].message
    assert set(server.recipients()) == set(emails) - {emails[1]}
    assert MailStore(ledger).counts(SLUG) == {"sent": n - 1, "failed": 1}


# -- a full disk, a damaged ledger -------------------------------------------------------------------------------


def test_disk_full_for_the_ledger_stops_cleanly_and_a_rerun_finishes_once(tmp_path, env, server):
    server.delay = 0.01
    cfg = tmp_path / "publisher.toml"
    settings_for(tmp_path, "postmark", server.base, batch_size=5, concurrency=2)
    cfg.write_text(cfg.read_text().replace('ledger = "publisher.db"', 'ledger = "disk/publisher.db"'))
    emails = add_subscribers(settings_for_file(cfg), 600)
    with tmpfs(tmp_path / "disk", "16m") as disk:
        proc = _push_proc(tmp_path, "push", str(ISSUE), "--channel", "email")
        deadline = time.monotonic() + 60
        while len(server.accepted) < 40 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        filler = fill(disk)  # something else fills the disk mid-campaign
        out, err = proc.communicate(timeout=120)  # no hang
        text = out + err
        assert proc.returncode == 1, text
        assert "disk is full" in text and str(disk / "publisher.db") in text, text
        assert "Traceback" not in text and "Exception in thread" not in text, text
        assert 0 < len(server.recipients()) < len(emails)
        filler.unlink()  # space freed: the re-run finishes, each reader exactly once
        p = _cli(tmp_path, "push", str(ISSUE), "--channel", "email")
        assert p.returncode == 0, clean(p)
        got = server.recipients()
        assert sorted(got) == emails and max(got.values()) == 1
        assert not (disk / "publisher.db.reserve").exists()


def settings_for_file(cfg: Path):
    from publisher.settings import load_settings

    return load_settings(cfg)


@pytest.mark.parametrize("damage", ["cut in half", "garbage"])
def test_a_damaged_ledger_is_a_clear_error_naming_the_file(tmp_path, env, server, damage):
    settings, emails = _finished(tmp_path, server, "postmark", n=300)
    ledger = settings.path("paths", "ledger")
    Path(f"{ledger}-wal").unlink(missing_ok=True)
    data = ledger.read_bytes()
    ledger.write_bytes(data[:len(data) // 2] if damage == "cut in half" else os.urandom(len(data)))
    p = _cli(tmp_path, "push", str(ISSUE), "--channel", "email")
    out = clean(p)
    assert p.returncode != 0 and str(ledger) in out and "damaged" in out and "backup" in out, out
    assert sum(server.recipients().values()) == len(emails)


# -- the provider in status and the dry run ----------------------------------------------------------------------


def test_status_and_dry_run_show_the_provider(tmp_path, env, server):
    settings = settings_for(tmp_path, "postmark", server.base)
    add_subscribers(settings, 3)
    p = _cli(tmp_path, "push", str(ISSUE), "--channel", "email", "--dry-run")
    assert p.returncode == 0 and "via postmark (500 a call" in p.stdout + p.stderr, clean(p)
    server.script = ["refuse"]  # a failed push says what carried it too
    p = _cli(tmp_path, "push", str(ISSUE), "--channel", "email")
    assert p.returncode == 1, clean(p)
    (row,) = json.loads(_cli(tmp_path, "status", "--format", "json").stdout)["pushes"]
    assert row["state"] == "failed" and row["via"] == "postmark", row
    p = _cli(tmp_path, "push", str(ISSUE), "--channel", "email")
    assert p.returncode == 0, clean(p)
    (row,) = json.loads(_cli(tmp_path, "status", "--format", "json").stdout)["pushes"]
    assert row["state"] == "done" and row["via"] == "postmark" and row["counts"]["sent"] == 3, row
    assert all(isinstance(v, int) for v in row["counts"].values())
    p = _cli(tmp_path, "status", SLUG, "--format", "tsv")
    assert "via postmark" in p.stdout and "sent 3" in p.stdout, p.stdout


# -- a sender that lost its lease ---------------------------------------------------------------------------------


@pytest.mark.parametrize("server", ["postmark"], indirect=True)
def test_a_sender_whose_lease_was_taken_over_stops_and_counts_what_it_sent_after(tmp_path, env, server, monkeypatch):
    """Another process takes the campaign over (our heartbeat looked stale): this sender stops at its
    next call, says so (lease_lost, exit 1 through push), and the new holder finishes — nobody lost,
    nobody twice (Postmark reconciles the call that was in flight)."""
    import publisher.stores.ledger as ledger_module

    monkeypatch.setattr(ledger_module, "LEASE_BEAT", 0.1)
    server.delay = 0.05
    settings = settings_for(tmp_path, "postmark", server.base, batch_size=5, concurrency=1)
    emails = add_subscribers(settings, 200)
    ledger = open_ledger(settings)
    lease = ledger.acquire(SLUG, "email", command="first")
    c = ProviderCampaign(rendition(settings), settings, ledger, secret=SECRET)
    c.lease = lease
    result: dict = {}
    sender = threading.Thread(target=lambda: result.update(stats=c.run()))
    sender.start()
    deadline = time.monotonic() + 30
    while len(server.accepted) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    other = Ledger(settings.path("paths", "ledger"))
    other.connect().execute("UPDATE leases SET heartbeat = 0")  # as if our heartbeat stopped long ago
    taker = other.acquire(SLUG, "email", command="second")
    sender.join(60)
    stats = result["stats"]
    assert stats.lease_lost and "another process took this campaign over" in stats.aborted, stats.summary()
    assert 0 < len(server.recipients()) < len(emails)
    assert open_db(settings).campaign(SLUG).state == "sending"  # not marked done by the stopped sender
    again = ProviderCampaign(rendition(settings), settings, other, secret=SECRET)
    again.lease = taker
    assert again.run().remaining == 0
    taker.release()
    assert server.recipients() == Counter(emails)
    assert open_db(settings).campaign(SLUG).state == "done"
