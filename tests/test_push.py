"""`publisher push` / `publisher status` and push_issue: the ledger-driven, one-path push."""

from __future__ import annotations

import pytest

from publisher.cli import main
from publisher.push import push_issue, redact
from publisher.settings import load_settings
from publisher.stores.ledger import Ledger
from publisher.transports.base import PushResult
from tests.push_support import add_config, git, make_remote, write_issue

OUTBOX_CHANNELS = ["zhihu", "aijishu", "plaintext"]


def states(project, slug="2026-01-05"):
    return {r.channel: (r.state, r.attempts) for r in Ledger(project / "publisher.db").records(slug)}


@pytest.fixture
def broken_github(project, tmp_path):
    """[github] repo_path points at a folder that is not a git repository."""
    plain = tmp_path / "not-a-repo"
    plain.mkdir()
    add_config(project, f'[github]\nrepo_path = "{plain}"\npush = true\n')
    return plain


def test_one_failure_others_succeed_then_rerun_pushes_only_the_failed(project, broken_github, tmp_path, capsys):
    issue = write_issue(project / "issues", "2026-01-05")
    args = ["push", str(issue), "-c", "github", *sum((["-c", c] for c in OUTBOX_CHANNELS), [])]

    assert main(args) == 1
    captured = capsys.readouterr()
    assert "github: failed" in captured.err and "not a git repository" in captured.err
    assert states(project) == {"github": ("failed", 1), "zhihu": ("done", 1), "aijishu": ("done", 1),
                               "plaintext": ("done", 1)}
    outbox = project / "outbox" / "2026-01-05"
    assert sorted(p.name for p in outbox.iterdir()) == ["aijishu.md", "plaintext.txt", "zhihu.md"]
    first_mtimes = {p.name: p.stat().st_mtime_ns for p in outbox.iterdir()}
    record = Ledger(project / "publisher.db").get("2026-01-05", "plaintext")
    assert record.url == str(outbox / "plaintext.txt")

    # fix: make repo_path a real clone, then re-run the same command
    bare, clone = make_remote(tmp_path / "git")
    text = (project / "publisher.toml").read_text(encoding="utf-8").replace(str(broken_github), str(clone))
    (project / "publisher.toml").write_text(text, encoding="utf-8")
    assert main(args) == 0
    out = capsys.readouterr().out
    for channel in OUTBOX_CHANNELS:
        assert f"{channel}: skipped: already done" in out
    assert "github: done" in out
    assert states(project) == {"github": ("done", 2), "zhihu": ("done", 1), "aijishu": ("done", 1),
                               "plaintext": ("done", 1)}
    assert {p.name: p.stat().st_mtime_ns for p in outbox.iterdir()} == first_mtimes
    assert git(bare, "log", "-1", "--format=%s", "master") == "Publish 嵌入式AI简报 (2026-01-05)"

    # --force pushes every channel again
    assert main([*args, "--force"]) == 0
    assert states(project) == {"github": ("done", 3), "zhihu": ("done", 2), "aijishu": ("done", 2),
                               "plaintext": ("done", 2)}


def test_dry_run_writes_nothing(project, capsys):
    issue = write_issue(project / "issues", "2026-01-05")
    assert main(["push", str(issue), "-c", "plaintext", "-c", "zhihu", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "plaintext: dry-run: would write" in out and "zhihu: dry-run" in out
    assert not (project / "outbox").exists()
    assert Ledger(project / "publisher.db").records() == []


def test_all_uses_enabled_channels_and_issue_by_date(project, capsys):
    add_config(project, '[channels]\nenabled = ["plaintext", "aijishu"]\n')
    write_issue(project / "issues", "2026-01-05")
    assert main(["push", "2026-01-05", "--all"]) == 0
    assert states(project) == {"plaintext": ("done", 1), "aijishu": ("done", 1)}


def test_channel_choice_is_required(project, capsys):
    issue = write_issue(project / "issues", "2026-01-05")
    assert main(["push", str(issue)]) == 2
    assert "--channel NAME" in capsys.readouterr().err
    assert main(["push", "2031-01-01", "--all"]) == 1
    assert "no issue 2031-01-01" in capsys.readouterr().err


def test_unexpected_exception_is_recorded_and_others_still_run(project, monkeypatch):
    from publisher.transports.outbox import OutboxTransport

    real_push = OutboxTransport.push

    def flaky(self, rendition, ctx):
        if rendition.channel == "zhihu":
            raise RuntimeError("boom")
        return real_push(self, rendition, ctx)

    monkeypatch.setattr(OutboxTransport, "push", flaky)
    issue = write_issue(project / "issues", "2026-01-05")
    report = push_issue(load_settings(), issue, ["zhihu", "plaintext"])
    assert [(o.channel, o.state) for o in report.outcomes] == [("zhihu", "failed"), ("plaintext", "done")]
    record = Ledger(project / "publisher.db").get("2026-01-05", "zhihu")
    assert record.state == "failed" and record.last_error == "RuntimeError: boom"


def test_render_error_is_a_failed_channel(project):
    # zhihu imports images from the web only: a local image without a public base fails its render
    add_config(project, '[newsletter]\nimage_base_url = ""\n')
    issue = write_issue(project / "issues", "2026-01-05", image=True)
    report = push_issue(load_settings(), issue, ["zhihu", "plaintext"])
    assert [(o.channel, o.state) for o in report.outcomes] == [("zhihu", "failed"), ("plaintext", "done")]
    assert "[newsletter] image_base_url" in report.outcomes[0].message
    assert Ledger(project / "publisher.db").get("2026-01-05", "zhihu").state == "failed"
    # the plaintext page has its image beside it in the outbox
    assert (project / "outbox" / "2026-01-05" / "img" / "2026-01-05.png").is_file()


def test_draft_can_be_pushed_by_hand_with_a_warning(project, capsys):
    issue = write_issue(project / "issues", "2026-01-05", status="draft")
    assert main(["push", str(issue), "-c", "plaintext"]) == 0
    assert "status 'draft'" in capsys.readouterr().err
    assert states(project) == {"plaintext": ("done", 1)}


def test_email_test_copy_leaves_the_ledger_row_alone(project, monkeypatch):
    """--to sends one test copy: the pushes row is neither created nor changed, even when done."""
    from publisher.channels.base import Rendition

    import publisher.pipeline as pipeline
    import publisher.transports as transports
    from publisher.transports.email import EmailTransport

    sent = []

    class FakeEmail(EmailTransport):  # the real rule for test copies, a push that sends nothing
        def push(self, rendition, ctx):
            sent.append(dict(ctx.options))
            return PushResult(remote_id="msg-1", summary="sent a test copy")

    real_get = transports.get_transport
    monkeypatch.setattr(transports, "get_transport", lambda c: FakeEmail if c == "email" else real_get(c))
    monkeypatch.setattr(pipeline, "render", lambda issue, channel, settings, ctx=None: Rendition(
        channel, issue.slug, "body", "text/html", f"{issue.slug}.html"))
    add_config(project, '[email]\nfrom_address = "news@example.net"\nlist_id = "news.example.net"\n'
               'unsubscribe_url = "https://example.net/u?t={token}"\n')
    issue = write_issue(project / "issues", "2026-01-05")
    settings = load_settings()
    report = push_issue(settings, issue, ["email"], options={"to": "me@example.org"})
    assert report.outcomes[0].state == "done" and "test copy" in report.outcomes[0].message
    assert Ledger(project / "publisher.db").get("2026-01-05", "email") is None

    ledger = Ledger(project / "publisher.db")
    ledger.begin("2026-01-05", "email")
    ledger.finish("2026-01-05", "email", remote_id="real")
    push_issue(settings, issue, ["email"], options={"to": "me@example.org"})  # done, yet sent
    assert len(sent) == 2 and sent[-1]["to"] == "me@example.org"
    record = ledger.get("2026-01-05", "email")
    assert (record.state, record.attempts, record.remote_id) == ("done", 1, "real")


def test_status_table_and_no_secrets(project, monkeypatch, capsys):
    monkeypatch.setenv("PUBLISHER_SMTP_PASSWORD", "hunter2-very-secret")
    monkeypatch.setenv("COLUMNS", "400")  # no wrapping inside cells
    issue = write_issue(project / "issues", "2026-01-05")
    assert main(["push", str(issue), "-c", "plaintext"]) == 0
    ledger = Ledger(project / "publisher.db")
    ledger.begin("2026-01-05", "wechat")
    ledger.fail("2026-01-05", "wechat",
                "POST https://api.example/cgi-bin/draft/add?access_token=TOKEN123: login hunter2-very-secret refused")
    capsys.readouterr()

    assert main(["status"]) == 0
    out = capsys.readouterr().out
    for word in ("issue", "channel", "state", "attempts", "2026-01-05", "plaintext", "done", "wechat", "failed",
                 "plaintext.txt"):
        assert word in out
    assert "TOKEN123" not in out and "hunter2-very-secret" not in out
    assert "access_token=***" in out

    assert main(["status", "2031-01-01"]) == 0
    assert "nothing pushed yet for 2031-01-01" in capsys.readouterr().out


def test_redact_masks_url_passwords():
    settings = load_settings()
    assert redact("https://user:pw@host/x", settings) == "https://user:***@host/x"
    assert redact("secret=abc&x=1", settings) == "secret=***&x=1"


def test_wechat_draft_only_is_not_done_when_publishing_is_asked(project):
    from publisher.push import is_done

    ledger = Ledger(project / "publisher.db")
    ledger.begin("2026-01-05", "wechat")
    ledger.finish("2026-01-05", "wechat", remote_id="MEDIA", details={"media_id": "MEDIA"})
    draft = ledger.get("2026-01-05", "wechat")
    assert is_done(draft, "wechat", {"publish": False})
    assert not is_done(draft, "wechat", {"publish": True})
    ledger.finish("2026-01-05", "wechat", remote_id="MEDIA", details={"publish_id": "P1"})
    assert is_done(ledger.get("2026-01-05", "wechat"), "wechat", {"publish": True})
    assert not is_done(None, "plaintext", {})


def test_unknown_channel_is_a_usage_error_without_ledger_rows(project, capsys):
    issue = write_issue(project / "issues", "2026-01-05")
    assert main(["push", str(issue), "-c", "plaintext", "-c", "myspace"]) == 1
    err = capsys.readouterr().err
    assert "unknown channel 'myspace'" in err and "Traceback" not in err
    assert Ledger(project / "publisher.db").records() == []


def test_shipped_placeholders_are_refused_before_anything_is_sent(project, capsys, monkeypatch):
    """With the shipped newsletter@example.org / example.org unsubscribe link, an email push (a
    test copy too) fails naming the key, before any connection; so does WeChat without a QR
    image it can host. Rendering still works, and setting the keys is the recovery."""
    import smtplib

    issue = write_issue(project / "issues", "2026-01-05")
    attempts = []
    real_smtp = smtplib.SMTP.__init__

    def no_connect(self, *a, **k):
        attempts.append(a)
        return real_smtp(self, *a, **k)

    monkeypatch.setattr(smtplib.SMTP, "__init__", no_connect)
    assert main(["push", str(issue), "-c", "email", "--to", "me@example.net"]) == 1
    err = capsys.readouterr().err
    assert "[email] from_address is still the shipped example 'newsletter@example.org'" in err
    assert str(project / "publisher.toml") in err
    assert main(["push", str(issue), "-c", "wechat", "--dry-run"]) == 1
    assert "[newsletter] qr_image is not set" in capsys.readouterr().err
    assert attempts == []
    add_config(project, '[email]\nfrom_address = "news@example.net"\n')
    report = push_issue(load_settings(), issue, ["email"], dry_run=True)
    assert "[email] unsubscribe_url is still the shipped example" in report.outcomes[0].message
    assert main(["render", str(issue), "-c", "email"]) == 0
