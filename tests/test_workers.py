"""Shared campaigns (issue 22): `publisher worker` processes claim recipients from one campaign
on PostgreSQL; killed workers lose nobody, and duplicates stay within the killed workers'
in-flight messages; PostgreSQL restarted mid-campaign: the workers reconnect and finish."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter

import pytest

from publisher import campaign as shared
from publisher.mailmsg import build_template
from publisher.settings import load_settings
from publisher.stores import open_ledger, open_subscribers
from publisher.stores.campaigns import CampaignStore
from publisher.stores.mail import MailStore
from tests.conftest import ROOT
from tests.email_support import Handler, write_project
from tests.test_email_delivery import cert, env, render, start_server  # noqa: F401  (fixtures)

CONNECTIONS = 2  # SMTP connections per worker: each has at most one message in flight


_RENDERED: dict = {}


def _campaign(tmp_path, url: str, port: int, n: int, domain: str):
    folder = tmp_path / domain
    cfg = write_project(folder, port, connections=CONNECTIONS,
                        extra=f'\n[database]\nurl = "{url}"\n')
    settings = load_settings(cfg)
    emails = [f"r{i:05d}@{domain}" for i in range(n)]
    subs = open_subscribers(settings)
    subs.add_many([(e, f"读者 {i}", "") for i, e in enumerate(emails)])
    if "template" not in _RENDERED:  # rendering is the slow part: once for all trials
        _, rendition = render(settings)
        _RENDERED.update(template=build_template(rendition, settings), issue=rendition.issue)
    template, issue = _RENDERED["template"], _RENDERED["issue"]
    ledger = open_ledger(settings)
    assert shared.start(ledger, subs, template, issue)
    assert not shared.start(ledger, subs, template, issue)  # it exists: joined, not written again
    return folder, settings, ledger, emails, issue


def _worker(folder) -> subprocess.Popen:
    env_vars = {**os.environ, "PYTHONPATH": str(ROOT)}
    env_vars.pop("PUBLISHER_CONFIG", None)
    return subprocess.Popen([sys.executable, "-m", "publisher", "worker", "--once"], cwd=folder, env=env_vars,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_four_workers_with_random_sigkills_lose_nobody(tmp_path, env, pg_cluster):  # noqa: F811
    """Four workers on one campaign; 20 times a random worker is SIGKILLed at a random moment and a
    new one takes its place (the trials overlap, so 20 kills fit in one campaign); at the end one
    more worker picks up what is left. Nobody is lost; every duplicate is a message that a killed
    worker had in flight (at most CONNECTIONS per kill)."""
    handler = Handler(data_delay=0.004)
    server = start_server(env, handler)
    rng = random.Random(22)
    kills = 0
    try:
        domain = "kills.example.com"
        folder, settings, ledger, emails, issue = _campaign(tmp_path, pg_cluster.create_db(), server.port,
                                                            1000, domain)
        workers = [_worker(folder) for _ in range(4)]
        deadline = time.monotonic() + 60
        while not handler.recipients():
            assert time.monotonic() < deadline, [w.communicate() for w in workers]
            time.sleep(0.005)
        sent_at_kill = []
        store = CampaignStore(ledger)
        while kills < 20:
            # a kill lands on a worker that is sending (joined), after some progress since the last
            mark, deadline = len(handler.recipients()), time.monotonic() + 60
            while True:
                joined = {r["pid"] for r in store.workers()}
                sending = [w for w in workers if w.poll() is None and w.pid in joined]
                if sending and len(handler.recipients()) >= mark + 10:
                    break
                assert time.monotonic() < deadline and any(w.poll() is None for w in workers), \
                    f"the campaign ended after {kills} kills: {len(handler.recipients())} messages"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.2))
            victim = rng.choice(sending)
            victim.kill()
            victim.wait()
            kills += 1
            sent_at_kill.append(len(handler.recipients()))
            workers.append(_worker(folder))
        for w in workers:
            _, err = w.communicate(timeout=120)
            assert w.returncode in (0, -9), err
        final = _worker(folder)  # whatever the last killed ones left (dead pids on this host: at once)
        _, err = final.communicate(timeout=120)
        assert final.returncode == 0, err
        got = Counter(handler.recipients())
        lost = [e for e in emails if not got[e]]
        dups = sum(c - 1 for c in got.values())
        report = {"kills": kills, "duplicates": dups, "lost": len(lost), "sent_at_kill": sent_at_kill}
        print("\nworker kill trials:", json.dumps(report))
        assert kills == 20 and sent_at_kill[-1] < len(emails), report  # the kills landed mid-campaign
        assert not lost, report
        assert dups <= kills * CONNECTIONS, report
        assert store.get(issue)["state"] == "done" and store.workers() == []
        assert ledger.get(issue, "email").state == "done"
        assert shared.CampaignStore(ledger).open_rows(issue) == 0
    finally:
        server.stop()


@pytest.mark.slow
def test_postgresql_restarted_mid_campaign_workers_reconnect_and_finish(tmp_path, env, pg_cluster):  # noqa: F811
    handler = Handler(data_delay=0.01)
    server = start_server(env, handler)
    try:
        folder, settings, ledger, emails, issue = _campaign(tmp_path, pg_cluster.create_db(), server.port,
                                                            300, "restart.example.com")
        workers = [_worker(folder) for _ in range(2)]
        deadline = time.monotonic() + 30
        while len(handler.recipients()) < 40:
            assert time.monotonic() < deadline, [w.communicate() for w in workers]
            time.sleep(0.01)
        pg_cluster.restart()
        errs = [w.communicate(timeout=120)[1] for w in workers]
        assert [w.returncode for w in workers] == [0, 0], errs
        assert "Traceback" not in "".join(errs), errs
        got = Counter(handler.recipients())
        assert not [e for e in emails if not got[e]]
        assert sum(c - 1 for c in got.values()) <= 2 * CONNECTIONS  # at most the in-flight ones
        assert CampaignStore(open_ledger(load_settings(folder / "publisher.toml"))).get(issue)["state"] == "done"
    finally:
        server.stop()


def test_push_in_team_mode_starts_the_campaign_and_workers_join_it(tmp_path, env, pg_cluster):  # noqa: F811
    """`publisher push ISSUE --channel email` with [database] url: the campaign is written once,
    two workers join it while the push sends; every reader gets one copy; the push records done."""
    from tests.email_support import ISSUE

    handler = Handler(data_delay=0.01)
    server = start_server(env, handler)
    try:
        url = pg_cluster.create_db()
        folder = tmp_path / "team"
        write_project(folder, server.port, connections=CONNECTIONS, extra=f'\n[database]\nurl = "{url}"\n')
        settings = load_settings(folder / "publisher.toml")
        emails = [f"r{i:04d}@team.example.com" for i in range(300)]
        open_subscribers(settings).add_many([(e, "", "") for e in emails])
        env_vars = {**os.environ, "PYTHONPATH": str(ROOT)}
        env_vars.pop("PUBLISHER_CONFIG", None)
        push = subprocess.Popen([sys.executable, "-m", "publisher", "push", str(ISSUE), "--channel", "email"],
                                cwd=folder, env=env_vars, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        store = CampaignStore(open_ledger(settings))
        deadline = time.monotonic() + 60
        while not store.running():
            assert push.poll() is None and time.monotonic() < deadline, push.communicate()
            time.sleep(0.02)
        workers = [_worker(folder) for _ in range(2)]
        out, err = push.communicate(timeout=120)
        assert push.returncode == 0, out + err
        for w in workers:
            assert w.communicate(timeout=120)[0] is None and w.returncode == 0
        got = Counter(handler.recipients())
        assert sorted(got) == emails and set(got.values()) == {1}
        issue = store.running() or [r["issue"] for r in store.db.connect().execute("SELECT issue FROM campaigns")]
        assert store.get(issue[0])["state"] == "done" and store.get(issue[0])["recipients"] == 300
        status = subprocess.run([sys.executable, "-m", "publisher", "status"], cwd=folder, env=env_vars,
                                capture_output=True, text=True)
        assert "done" in status.stdout and "sent 300" in status.stdout, status.stdout + status.stderr
    finally:
        server.stop()


def test_sigterm_stops_a_worker_cleanly_and_the_campaign_resumes(tmp_path, env, pg_cluster):  # noqa: F811
    """systemd's stop: the worker finishes the messages in flight, commits, leaves no claim and no
    row in `sending`; the next worker finishes the campaign with nobody lost."""
    import signal

    handler = Handler(data_delay=0.01)
    server = start_server(env, handler)
    try:
        folder, settings, ledger, emails, issue = _campaign(tmp_path, pg_cluster.create_db(), server.port,
                                                            300, "term.example.com")
        w = _worker(folder)
        deadline = time.monotonic() + 60
        while len(handler.recipients()) < 20:
            assert w.poll() is None and time.monotonic() < deadline, w.communicate()
            time.sleep(0.01)
        w.send_signal(signal.SIGTERM)
        _, err = w.communicate(timeout=60)
        assert w.returncode != 0 and "Traceback" not in err, err
        store = CampaignStore(ledger)
        assert store.workers() == [] and "sending" not in MailStore(ledger).counts(issue)
        assert store.open_rows(issue) > 0  # stopped mid-campaign
        final = _worker(folder)
        _, err = final.communicate(timeout=120)
        assert final.returncode == 0, err
        got = Counter(handler.recipients())
        assert not [e for e in emails if not got[e]] and sum(c - 1 for c in got.values()) <= CONNECTIONS
        assert store.get(issue)["state"] == "done"
    finally:
        server.stop()


def test_a_sender_that_finds_the_campaign_done_reports_nothing_remaining(tmp_path, env, pg_cluster,  # noqa: F811
                                                                         monkeypatch):
    """Another worker's last message is committed `sent` between the end of this sender's run (its
    count of what is left: that message, in flight) and its check that the campaign is done. The
    campaign is done; the push said `remaining 1 … stopped: some messages could not be recorded`
    and exited 1 (seen in CI once the senders finished closer together). Now the sender that finds
    the campaign done reports nothing remaining, and the push has nothing to resume."""
    from publisher.transports.email import Campaign, _raise_if_stopped

    handler = Handler()
    server = start_server(env, handler)
    try:
        folder, settings, ledger, emails, issue = _campaign(tmp_path, pg_cluster.create_db(), server.port,
                                                            20, "race.example.com")
        store, mail = CampaignStore(ledger), MailStore(ledger)
        other = store.join("publisher worker (another host)")
        held = other.claim(issue, 1)  # its message is in flight
        mail.mark(issue, held[0], "sending", message_id="<m@x>", attempt=True)
        real = CampaignStore.finish_if_done

        def late(self, iss):  # the other worker's 250 arrives and is committed just now
            mail.mark(issue, held[0], "sent", message_id="<m@x>", code=250)
            return real(self, iss)

        monkeypatch.setattr(CampaignStore, "finish_if_done", late)
        stats, done = shared.send(settings, ledger, issue, sender=Campaign, secret="bench-secret")
        other.leave()
    finally:
        server.stop()
    assert done and stats.sent == 19 and stats.remaining == 0, stats.summary()
    _raise_if_stopped(stats, issue)  # nothing to resume: the push exits 0
    assert sorted(handler.recipients()) == sorted(e for e in emails if e != held[0])


class EndsSessions(Handler):
    """At RCPT TO `at`, ends every other PostgreSQL session whose query is LIKE `query` (what a
    restart, a failover or an administrator does to a sender's connection)."""

    def __init__(self, url: str, at: str, query: str):
        super().__init__()
        self.url, self.at, self.query = url, at, query

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address == self.at:
            import psycopg

            with psycopg.connect(self.url, autocommit=True) as c:
                c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                          "AND query LIKE %s", (self.query,))
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)


def _one_connection_shared_campaign(tmp_path, tls, url, handler, emails, email_extra=""):
    """`emails` as a shared campaign on PostgreSQL `url`, sent by one sender with one connection
    to `handler` (aiosmtpd with the `tls` certificate): (ledger, issue, stats, done)."""
    from publisher.transports.email import Campaign

    server = start_server(tls, handler)
    try:
        cfg = write_project(tmp_path, server.port, connections=1, extra=f'\n[database]\nurl = "{url}"\n')
        cfg.write_text(cfg.read_text().replace("[email]\n", "[email]\n" + email_extra, 1))
        settings = load_settings(cfg)
        open_subscribers(settings).add_many([(e, "", "") for e in emails])
        _, rendition = render(settings)
        ledger = open_ledger(settings)
        assert shared.start(ledger, open_subscribers(settings), build_template(rendition, settings), rendition.issue)
        stats, done = shared.send(settings, ledger, rendition.issue, sender=Campaign, secret="s")
    finally:
        server.stop()
    return ledger, rendition.issue, stats, done


def test_a_database_error_between_the_sending_commit_and_the_dot_does_not_lose_the_message(
        tmp_path, env, pg_cluster):  # noqa: F811
    """Before its final dot a message checks whether the next reader is still active (that
    reader's MAIL/RCPT/DATA would go out with the dot). A PostgreSQL error there (the subscribers'
    connection dropped) used to escape after `sending` was committed: the dot never left, the row
    stayed `sending`, and with [email] ambiguous = skip the reader never got the message. Now the
    next message is just not chained, and this one goes out."""
    url = pg_cluster.create_db()
    emails = [f"r{i}@drop.example.com" for i in range(4)]  # one claim: the feed is done before the first dot
    # at emails[1]: the sender checked emails[2] before this; it is checked next, before the dot
    handler = EndsSessions(url, emails[1], "%FROM subscribers%")
    ledger, issue, stats, done = _one_connection_shared_campaign(tmp_path, env, url, handler, emails,
                                                                 'ambiguous = "skip"\n')
    assert MailStore(ledger).counts(issue) == {"sent": 4}, stats.summary()
    assert sorted(handler.recipients()) == emails and done


def test_a_postgresql_restart_seen_as_admin_shutdown_is_a_database_fault_the_sender_rides_out(
        tmp_path, env, pg_cluster):  # noqa: F811
    """A restart (or failover) ends every session with 57P01 admin_shutdown: psycopg raises
    AdminShutdown, an OperationalError. The run stops on it and `send` must reconnect and resume
    (publisher.campaign._db_fault), not leave the campaign as if the SMTP server had failed."""
    url = pg_cluster.create_db()
    emails = [f"r{i}@shutdown.example.com" for i in range(4)]
    # at emails[1]: its `sending` is committed next, by the connection ended now
    handler = EndsSessions(url, emails[1], "%INTO email_sends%")
    ledger, issue, stats, done = _one_connection_shared_campaign(tmp_path, env, url, handler, emails)
    assert done and MailStore(ledger).counts(issue) == {"sent": 4}, stats.summary()
    assert sorted(handler.recipients()) == emails
