"""Bounces and complaints: VERP envelope senders on a real campaign (aiosmtpd), DSN and ARF
samples in the shapes Postfix, Exim, Gmail and Microsoft send, applied exactly once across
re-runs from a Maildir, an mbox and a real Dovecot IMAP server over TLS."""

from __future__ import annotations

import imaplib
import mailbox
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from publisher.bounces import Processor, process_mailboxes, verp_address, verp_pattern
from publisher.errors import PublisherError
from publisher.settings import load_settings
from publisher.stores.ledger import Ledger
from publisher.stores.mail import EVENTS_SCHEMA, SENDS_SCHEMA
from publisher.subscribers import SubscriberDB
from publisher.transports.email import run_campaign
from tests import bounce_samples as S
from tests.conftest import ROOT
from tests.email_support import SECRET, Handler, free_port, write_project
from tests.test_email_delivery import cert, env, render, start_server  # noqa: F401 - fixtures

LIST_ID = "embedded-ai.example.org"
BOUNCES = "bounces@example.org"
DOVECOT = shutil.which("dovecot") or ("/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None)


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv("PUBLISHER_UNSUBSCRIBE_SECRET", SECRET)
    monkeypatch.delenv("PUBLISHER_CONFIG", raising=False)


def project(tmp_path: Path, smtp_port: int = 25, extra: str = "") -> tuple:
    cfg = write_project(tmp_path, smtp_port, extra=f'\n[bounces]\naddress = "{BOUNCES}"\nsoft_limit = 2\n{extra}')
    settings = load_settings(cfg)
    db = SubscriberDB(settings.path("email", "subscribers_db"))
    emails = [f"r{i}@example.com" for i in range(8)]
    db.add_many([(e, "", "") for e in emails])
    return settings, db, emails


def token_for(db: SubscriberDB, email: str, issue: str = "2026-11-23") -> str:
    return verp_address(BOUNCES, SECRET, LIST_ID, issue, db.get(email).id, email)


def unsub_url(email: str) -> str:
    from publisher.unsubscribe import make_token

    return f"https://news.example.org/unsubscribe?token={make_token(SECRET, LIST_ID, email)}"


def samples(db: SubscriberDB, e: list[str]) -> dict[str, bytes]:
    """One message of each kind; the reader each one concerns is fixed by the index."""
    forged = token_for(db, e[7])[:-12] + "aaaaaaaaaa@example.org"  # e7's token, a made-up MAC
    return {
        "postfix": S.postfix_hard(token_for(db, e[0]), e[0]),
        "exim": S.exim_classic_hard(token_for(db, e[1]), e[1]),
        "gmail": S.gmail_hard(token_for(db, e[2]), e[2]),
        "microsoft": S.microsoft_hard(token_for(db, e[3]), e[3]),
        "arf": S.arf_complaint(token_for(db, e[4]), e[4], unsub_url(e[4])),
        "arf-redacted": S.arf_complaint(BOUNCES, e[5], unsub_url(e[5]), mid="arf-2", verp=False),
        "soft": S.exim_dsn_soft(token_for(db, e[6]), e[6]),
        "delay": S.gmail_delay(token_for(db, e[6]), e[6]),
        "forged": S.postfix_hard(forged, e[7], mid="forged-1"),
        "auto-reply": S.auto_reply(token_for(db, e[7])),
        "junk": S.junk(BOUNCES),
        "broken": S.broken(BOUNCES),
    }


EXPECTED = {0: "bounced", 1: "bounced", 2: "bounced", 3: "bounced", 4: "unsubscribed", 5: "unsubscribed",
            6: "active", 7: "active"}


def states(db: SubscriberDB, emails: list[str]) -> dict[int, str]:
    return {i: db.get(e).state for i, e in enumerate(emails)}


def events(settings) -> list:
    ledger = Ledger(settings.path("paths", "ledger"))
    ledger.ensure(EVENTS_SCHEMA)
    return ledger.connect().execute("SELECT key, kind, email, issue, status, evidence, action FROM mail_events "
                                    "ORDER BY key").fetchall()


def write_maildir(path: Path, msgs: dict[str, bytes]) -> None:
    box = mailbox.Maildir(str(path), create=True)
    for raw in msgs.values():
        box.add(raw)
    box.close()


# -- parsing ----------------------------------------------------------------------------------


def test_each_sample_is_classified(tmp_path):
    settings, db, e = project(tmp_path)
    proc = Processor(settings, Ledger(settings.path("paths", "ledger")), db, SECRET)
    got = {name: proc.process(raw, name) for name, raw in samples(db, e).items()}
    assert got["postfix"] == got["exim"] == got["gmail"] == got["microsoft"] == "bounced"
    assert got["arf"] == got["arf-redacted"] == "unsubscribed (complaint)"
    assert got["soft"] == "soft bounce counted"
    assert got["delay"].startswith("ignored: delivery status notification without a failure")
    assert got["forged"].startswith("ignored: hard report without a genuine VERP or unsubscribe token")
    assert got["auto-reply"].startswith("ignored: automatic message")
    assert got["junk"].startswith("ignored: not a delivery report")
    assert got["broken"].startswith("ignored:")
    assert states(db, e) == EXPECTED
    by_email = {r["email"]: r for r in events(settings) if r["email"]}
    assert by_email[e[0]]["status"] == "5.1.1" and "User unknown" in by_email[e[0]]["evidence"]
    assert by_email[e[0]]["issue"] == "2026-11-23"
    assert by_email[e[3]]["status"] == "5.1.10" and "RecipientNotFound" in by_email[e[3]]["evidence"]
    assert "No such user" in by_email[e[1]]["evidence"]
    assert by_email[e[4]]["kind"] == "complaint" and "Yahoo" in by_email[e[4]]["evidence"]
    assert by_email[e[6]]["status"] == "4.2.2"
    # no event carries the address of a message that was ignored
    assert all(r["email"] is None for r in events(settings) if r["kind"] == "ignored")


def test_a_complaint_wins_over_a_bounce_and_pending_is_never_activated(tmp_path):
    settings, db, e = project(tmp_path)
    proc = Processor(settings, Ledger(settings.path("paths", "ledger")), db, SECRET)
    proc.process(S.postfix_hard(token_for(db, e[0]), e[0]), "a")
    proc.process(S.arf_complaint(token_for(db, e[0]), e[0], unsub_url(e[0])), "b")
    assert db.get(e[0]).state == "unsubscribed"
    # a bounce that arrives after the complaint does not undo the unsubscribe
    proc.process(S.microsoft_hard(token_for(db, e[0]), e[0]), "c")
    assert db.get(e[0]).state == "unsubscribed"


def test_soft_bounces_bounce_after_the_limit_in_a_row(tmp_path):
    settings, db, e = project(tmp_path)  # soft_limit = 2
    ledger = Ledger(settings.path("paths", "ledger"))
    ledger.ensure(SENDS_SCHEMA)
    conn = ledger.connect()
    for issue in ("2026-11-09", "2026-11-16", "2026-11-23"):
        for who in (e[0], e[1]):
            conn.execute("INSERT INTO email_sends (issue, email, state, updated_at) VALUES (?, ?, 'sent', 'x')",
                         (issue, who))
    proc = Processor(settings, ledger, db, SECRET)

    def soft(who, issue, n):
        return proc.process(S.exim_dsn_soft(token_for(db, who, issue), who, mid=f"soft-{who}-{issue}-{n}"), "t")

    # e0: soft on 11-16 and 11-23 (the last two issues sent) → bounced
    assert soft(e[0], "2026-11-16", 1) == "soft bounce counted"
    assert soft(e[0], "2026-11-16", 2) == "soft bounce counted"  # the same issue twice counts once
    assert db.get(e[0]).state == "active"
    assert soft(e[0], "2026-11-23", 1) == "bounced after 2 soft bounces in a row"
    assert db.get(e[0]).state == "bounced"
    # e1: soft on 11-09 and 11-23 but 11-16 arrived: not in a row
    soft(e[1], "2026-11-09", 1)
    soft(e[1], "2026-11-23", 1)
    assert db.get(e[1]).state == "active"


def test_maildir_applied_once_across_reruns_and_moved(tmp_path):
    settings, db, e = project(tmp_path)
    box = tmp_path / "Maildir"
    msgs = samples(db, e)
    write_maildir(box, msgs)
    first = process_mailboxes(settings, mailbox=box)
    assert (first.hard, first.complaints, first.soft, first.ignored) == (4, 2, 1, 5)
    assert states(db, e) == EXPECTED
    assert not any((box / "new").iterdir()) and not any((box / "cur").iterdir())
    assert len(list((box / ".processed" / "cur").iterdir())) == len(msgs)
    n_events = len(events(settings))
    # the same messages delivered again (e.g. restored from a backup): nothing is applied twice
    db.set_state(e[4], "active")  # the reader re-subscribed since the complaint
    write_maildir(box, msgs)
    again = process_mailboxes(settings, mailbox=box)
    assert again.already == len(msgs) and again.hard == 0 and again.complaints == 0
    assert db.get(e[4]).state == "active", "an old complaint is not applied again"
    assert len(events(settings)) == n_events + 0  # "broken" has no Message-ID: same bytes, same key


def test_mbox_is_read_only_and_idempotent(tmp_path):
    settings, db, e = project(tmp_path)
    path = tmp_path / "bounces.mbox"
    box = mailbox.mbox(str(path))
    for raw in samples(db, e).values():
        box.add(raw)
    box.close()
    before = path.read_bytes()
    s1 = process_mailboxes(settings, mailbox=path)
    s2 = process_mailboxes(settings, mailbox=path)
    assert s1.hard == 4 and s2.hard == 0 and s2.already == 12
    assert path.read_bytes() == before
    assert states(db, e) == EXPECTED


def test_bounces_command_errors_are_clear(tmp_path):
    settings, db, e = project(tmp_path)
    env_vars = {**os.environ, "PYTHONPATH": str(ROOT), "PUBLISHER_UNSUBSCRIBE_SECRET": SECRET}
    env_vars.pop("PUBLISHER_CONFIG", None)
    run = lambda *a: subprocess.run([sys.executable, "-m", "publisher.cli", *a], cwd=tmp_path,  # noqa: E731
                                    env=env_vars, capture_output=True, text=True, timeout=60)
    p = run("bounces")
    assert p.returncode == 1 and "[bounces] mailbox" in p.stderr and "Traceback" not in p.stderr
    p = run("bounces", "--mailbox", "nowhere")
    assert p.returncode == 1 and "nowhere does not exist" in p.stderr
    box = tmp_path / "Maildir"
    write_maildir(box, {"p": S.postfix_hard(token_for(db, e[0]), e[0])})
    p = run("bounces", "--mailbox", str(box))
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("bounces: 1 hard, 0 soft, 0 complaint(s), 0 ignored, 0 already processed")
    p = run("subscribers", "show", e[0])
    assert "state: bounced" in p.stdout and "hard issue=2026-11-23 bounced: Status: 5.1.1" in p.stdout
    assert "source=import" in p.stdout


# -- VERP on a real campaign --------------------------------------------------------------------


@pytest.mark.parametrize("pipelining", [True, False])
def test_campaign_uses_a_verp_sender_per_recipient(tmp_path, env, pipelining):  # noqa: F811
    server = start_server(env, Handler(pipelining=pipelining))
    try:
        settings, db, e = project(tmp_path, server.port)
        _, rendition = render(settings)
        stats = run_campaign(rendition, settings, Ledger(settings.path("paths", "ledger")))
    finally:
        server.stop()
    assert stats.sent == len(e)
    pattern = verp_pattern(BOUNCES)
    for m in server.handler.messages:
        rcpt = m.rcpts[0]
        assert m.mail_from == token_for(db, rcpt), "each message's MAIL FROM names its own recipient"
        assert pattern.fullmatch(m.mail_from) and len(m.mail_from.split("@")[0]) <= 64
    # a bounce to that very envelope sender is applied to that reader
    victim = server.handler.messages[3]
    proc = Processor(settings, Ledger(settings.path("paths", "ledger")), db, SECRET)
    assert proc.process(S.gmail_hard(victim.mail_from, victim.rcpts[0]), "t") == "bounced"
    assert db.get(victim.rcpts[0]).state == "bounced"


# -- a real IMAP server -------------------------------------------------------------------------


@pytest.fixture
def dovecot(tmp_path, env):  # noqa: F811 - env: SSL_CERT_FILE trusts the test certificate
    """A real Dovecot on 127.0.0.1 (IMAPS on a free port), its own config, users and Maildir in a
    private folder. As root, Dovecot's login and mail processes run as Debian's dovenull/dovecot
    users (it refuses root), so the folder is made theirs."""
    import grp
    import pwd
    import tempfile

    if DOVECOT is None:
        pytest.skip("dovecot not installed (apt-get install dovecot-imapd; .ci/run does)")
    cert_file, key_file = env
    if os.getuid() == 0:
        try:
            login, internal = pwd.getpwnam("dovenull"), pwd.getpwnam("dovecot")
        except KeyError:
            pytest.skip("running as root without Debian's dovenull/dovecot users")
        mail_uid, mail_gid = internal.pw_uid, internal.pw_gid
        login_user, internal_user = login.pw_name, internal.pw_name
    else:
        me = pwd.getpwuid(os.getuid())
        mail_uid, mail_gid = me.pw_uid, me.pw_gid
        login_user = internal_user = me.pw_name
    base = Path(tempfile.mkdtemp(prefix="publisher-dovecot-"))
    for sub in ("run", "mail"):
        (base / sub).mkdir()
    shutil.copy(cert_file, base / "cert.pem")
    shutil.copy(key_file, base / "key.pem")
    port = free_port()
    (base / "passwd").write_text(f"bouncer:{{PLAIN}}imap-pw::::{base}/mail::\n")
    conf = base / "dovecot.conf"
    conf.write_text(f"""
base_dir = {base}/run
state_dir = {base}/run
log_path = {base}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{base}/cert.pem
ssl_key = <{base}/key.pem
default_login_user = {login_user}
default_internal_user = {internal_user}
default_internal_group = {grp.getgrgid(mail_gid).gr_name}
first_valid_uid = {mail_uid}
last_valid_uid = {mail_uid}
mail_location = maildir:{base}/mail/Maildir
auth_mechanisms = plain
passdb {{
  driver = passwd-file
  args = {base}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_uid} gid={mail_gid} home={base}/mail
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
""")
    os.chmod(base, 0o755)
    for f in (base / "mail", base / "passwd"):
        os.chown(f, mail_uid, mail_gid) if os.getuid() == 0 else None
    proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    try:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = (base / "dovecot.log").read_text() if (base / "dovecot.log").exists() else ""
                    pytest.skip(f"dovecot could not start here: {proc.stderr.read().decode()[-300:]} {log[-300:]}")
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(base, ignore_errors=True)


def test_imap_over_tls_applied_once_and_moved(tmp_path, dovecot):
    settings, db, e = project(tmp_path, extra=f'imap_host = "127.0.0.1"\nimap_port = {dovecot}\n'
                                                 'imap_user = "bouncer"\n')
    os.environ["PUBLISHER_IMAP_PASSWORD"] = "imap-pw"  # popped in finally
    try:
        msgs = samples(db, e)
        ctx = ssl.create_default_context()
        with imaplib.IMAP4_SSL("127.0.0.1", dovecot, ssl_context=ctx) as m:
            m.login("bouncer", "imap-pw")
            for raw in msgs.values():
                assert m.append("INBOX", None, None, raw)[0] == "OK"
        first = process_mailboxes(settings)
        assert (first.hard, first.complaints, first.soft, first.ignored) == (4, 2, 1, 5)
        assert states(db, e) == EXPECTED
        with imaplib.IMAP4_SSL("127.0.0.1", dovecot, ssl_context=ctx) as m:
            m.login("bouncer", "imap-pw")
            assert m.select("INBOX")[1][0] == b"0", "processed messages left the inbox"
            assert int(m.select('"publisher-processed"')[1][0]) == len(msgs)
            # a copy put back into the inbox is recognised and not applied again
            for raw in msgs.values():
                m.append("INBOX", None, None, raw)
        db.set_state(e[0], "active")
        second = process_mailboxes(settings)
        assert second.already == len(msgs) and second.hard == 0
        assert db.get(e[0]).state == "active"
        # a wrong password is a clear error, not a traceback
        os.environ["PUBLISHER_IMAP_PASSWORD"] = "wrong"
        with pytest.raises(PublisherError, match="imap_user 'bouncer'"):
            process_mailboxes(settings)
    finally:
        os.environ.pop("PUBLISHER_IMAP_PASSWORD", None)


def test_the_scheduler_processes_bounces_before_mailing(tmp_path):
    from publisher.scheduler import run_tick

    box = tmp_path / "Maildir"
    settings, db, e = project(tmp_path, extra=f'mailbox = "{box}"\n')
    write_maildir(box, {"p": S.postfix_hard(token_for(db, e[0]), e[0])})
    (tmp_path / "issues").mkdir(exist_ok=True)
    assert run_tick(settings) == []  # nothing to publish, but the mailbox was read
    assert db.get(e[0]).state == "bounced"
    assert len(list((box / ".processed" / "cur").iterdir())) == 1
