"""The channel contract is the only door: a throwaway third-party channel — its own module,
template folder, config table and transport, registered by an entry point of a temporary
distribution — renders, builds, checks, previews and pushes with no file of the project changed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, ROOT

CHANNEL_MODULE = '''
"""A Relay channel, as a third party would write it."""
from pathlib import Path

import requests

from publisher.channels.base import Channel, Rendition
from publisher.errors import TransportError
from publisher.limits import Violation
from publisher.transports.base import PushResult, Transport

MAX_CHARS = 4096


class RelayChannel(Channel):
    name = "relay"
    media_type = "text/plain"
    extension = ".txt"
    transport = "tgchannel:RelayTransport"
    template_folder = Path(__file__).parent / "templates"
    config = """
[relay]
chat_id = ""
api_base = "https://api.relay.org"
token_env = "TG_BOT_TOKEN"
"""

    def render(self, issue):
        body = self.ctx.env.get_template("relay/message.txt").render(issue=issue)
        return Rendition(self.name, issue.slug, body, self.media_type, self.filename(issue),
                         metadata={"chat_id": self.settings["relay"]["chat_id"]})

    @classmethod
    def check(cls, rendition):
        if len(rendition.body) > MAX_CHARS:
            return [Violation("relay", "length", f"relay message is {len(rendition.body)} characters; "
                              f"the limit is {MAX_CHARS}", len(rendition.body), MAX_CHARS)]
        return []


class RelayTransport(Transport):
    channel = "relay"

    def push(self, rendition, ctx):
        cfg = ctx.settings["relay"]
        token = ctx.settings.secret("relay", "token_env")
        if ctx.dry_run:
            return PushResult(summary="relay: dry run")
        r = requests.post(f"{cfg['api_base']}/bot{token}/sendMessage",
                          json={"chat_id": cfg["chat_id"], "text": rendition.body}, timeout=10)
        data = r.json()
        if not data.get("ok"):
            raise TransportError(f"relay: {data.get('description')}")
        mid = str(data["result"]["message_id"])
        return PushResult(remote_id=mid, summary=f"relay: message {mid} sent")
'''

TEMPLATE = """{{ issue.title }}
{% for section in issue.sections %}
== {{ section.name }} ==
{% for item in section.items %}
- {{ item.title }}{% if item.url %} {{ item.url }}{% endif %}

{% endfor %}
{% endfor %}
"""


def _project_fingerprint() -> str:
    """A digest of every file of the project (tracked or not), caches and venvs aside."""
    h = hashlib.sha256()
    skip = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis", "test-artifacts",
            "build", "dist"}
    for path in sorted(ROOT.rglob("*")):
        if any(part in skip or part.endswith(".egg-info") for part in path.relative_to(ROOT).parts):
            continue
        if path.is_file():
            h.update(str(path.relative_to(ROOT)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


class _BotApi(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ok = self.path == "/botsecret-token/sendMessage"
        _BotApi.received.append((self.path, body))
        reply = {"ok": ok, "result": {"message_id": len(_BotApi.received)}} if ok else \
            {"ok": False, "description": "Unauthorized"}
        data = json.dumps(reply).encode()
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def bot_api():
    _BotApi.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BotApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _BotApi.received
    server.shutdown()


@pytest.fixture
def third_party(tmp_path: Path, bot_api) -> tuple[Path, dict]:
    """A distribution installed only on PYTHONPATH, and a project that enables its channel."""
    site = tmp_path / "site"
    pkg = site / "tgchannel"
    (pkg / "templates").mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(CHANNEL_MODULE), encoding="utf-8")
    (pkg / "templates" / "message.txt").write_text(TEMPLATE, encoding="utf-8")
    dist = site / "tgchannel-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tgchannel\nVersion: 0.1\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text("[publisher.channels]\nrelay = tgchannel:RelayChannel\n",
                                           encoding="utf-8")
    project = tmp_path / "project"
    shutil.copytree(EXAMPLES / "issues", project / "issues")
    url, _ = bot_api
    (project / "publisher.toml").write_text(textwrap.dedent(f"""
        [paths]
        issues = "issues"
        out = "build"
        ledger = "publisher.db"
        [channels]
        enabled = ["github", "relay"]
        [relay]
        chat_id = "-100123"
        api_base = "{url}"
        """), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PUBLISHER_CONFIG"}
    env["PYTHONPATH"] = str(site)
    env["TG_BOT_TOKEN"] = "secret-token"
    return project, env


def _publisher(project: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "publisher", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_third_party_channel_works_through_every_command(third_party, bot_api) -> None:
    project, env = third_party
    _, received = bot_api
    before = _project_fingerprint()
    issue = "issues/2026-11-23.md"

    r = _publisher(project, env, "render", issue, "--channel", "relay")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("嵌入式AI简报 (2026-11-23)") and "== " in r.stdout

    r = _publisher(project, env, "build", "--out", "out")
    assert r.returncode == 0, r.stderr
    assert (project / "out" / "relay" / "2026-11-23.txt").is_file()
    assert (project / "out" / "github" / "2026-11-23.md").is_file()

    r = _publisher(project, env, "check", "--offline", issue)
    assert r.returncode == 0, r.stdout + r.stderr

    r = _publisher(project, env, "preview", issue, "--channel", "relay", "--no-open")
    assert r.returncode == 0, r.stderr
    page = Path(r.stdout.strip().splitlines()[-1]).read_text(encoding="utf-8")
    assert "relay" in page and "== " in page

    r = _publisher(project, env, "push", issue, "--channel", "relay")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(received) == 1
    path, body = received[0]
    assert path == "/botsecret-token/sendMessage" and body["chat_id"] == "-100123"
    assert body["text"].startswith("嵌入式AI简报 (2026-11-23)")
    assert "secret-token" not in r.stdout + r.stderr  # the token stays out of the output

    r = _publisher(project, env, "push", issue, "--channel", "relay")  # done: not sent again
    assert r.returncode == 0 and len(received) == 1, r.stdout + r.stderr
    r = _publisher(project, env, "status", "2026-11-23")
    assert "relay" in r.stdout and "done" in r.stdout

    assert _project_fingerprint() == before, "the third-party channel changed a file of the project"


def test_a_third_party_channels_limits_and_config_are_its_own(third_party) -> None:
    project, env = third_party
    # its config table is validated with the schema it declared
    toml = project / "publisher.toml"
    toml.write_text(toml.read_text(encoding="utf-8") + "chat_idd = 1\n", encoding="utf-8")
    r = _publisher(project, env, "render", "issues/2026-11-23.md", "--channel", "relay")
    assert r.returncode == 1 and "unknown key [relay] chat_idd" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    toml.write_text(toml.read_text(encoding="utf-8").replace("chat_idd = 1\n", ""), encoding="utf-8")

    # its check runs in `publisher check`: a message over 4,096 characters is reported
    issue = project / "issues" / "2026-11-23.md"
    text = issue.read_text(encoding="utf-8")
    long_title = "很长的标题" * 900
    issue.write_text(text.replace("## ", f"## {long_title}\n\n## ", 1), encoding="utf-8")
    r = _publisher(project, env, "check", "--offline", str(issue))
    assert r.returncode == 1 and "relay message is" in r.stdout + r.stderr, r.stdout + r.stderr


def test_user_templates_extend_the_builtin_ones(tmp_path: Path) -> None:
    """A user override can extend a built-in template through the `!builtin/` prefix."""
    from publisher.pipeline import load, render
    from publisher.settings import load_settings

    (tmp_path / "tpl" / "github").mkdir(parents=True)
    (tmp_path / "tpl" / "github" / "footer.md").write_text(
        '{% extends "!builtin/github/footer.md" %}\n', encoding="utf-8")
    plain = tmp_path / "plain.toml"
    plain.write_text(f'[paths]\nissues = "{EXAMPLES / "issues"}"\n', encoding="utf-8")
    (tmp_path / "publisher.toml").write_text(
        f'[paths]\nissues = "{EXAMPLES / "issues"}"\ntemplates = "tpl"\n', encoding="utf-8")
    issue, _ = load(EXAMPLES / "issues" / "2026-11-23.md")
    base = render(issue, "github", load_settings(plain)).body
    extended = render(issue, "github", load_settings(tmp_path / "publisher.toml")).body
    assert extended == base

    (tmp_path / "tpl" / "github" / "footer.md").write_text(
        '{% extends "!builtin/github/footer.md" %}{% block license %}自定义许可{% endblock %}\n', encoding="utf-8")
    custom = render(issue, "github", load_settings(tmp_path / "publisher.toml")).body
    assert "自定义许可" in custom and custom != base


# ---- a name is claimed once ---------------------------------------------------------------------

DUPLICATE = '''
from publisher.channels.plaintext import PlainTextChannel


class Impostor(PlainTextChannel):
    """Registers the name of a built-in channel."""
    override = OVERRIDE

    def render(self, issue):
        import dataclasses
        r = super().render(issue)
        return dataclasses.replace(r, body="IMPOSTOR\\n" + r.body)
'''


def _distribution(site: Path, name: str, module: str, entry: str) -> None:
    (site / f"{name}.py").write_text(module, encoding="utf-8")
    dist = site / f"{name}-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text(f"[publisher.channels]\n{entry}\n", encoding="utf-8")


@pytest.mark.parametrize("override", [False, True])
def test_a_channel_name_registered_twice_is_refused_naming_both(tmp_path: Path, override: bool) -> None:
    site = tmp_path / "site"
    site.mkdir()
    _distribution(site, "impostor", DUPLICATE.replace("OVERRIDE", str(override)), "plaintext = impostor:Impostor")
    project = tmp_path / "project"
    shutil.copytree(EXAMPLES / "issues", project / "issues")
    (project / "publisher.toml").write_text('[paths]\nissues = "issues"\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PUBLISHER_CONFIG"}
    env["PYTHONPATH"] = str(site)
    r = _publisher(project, env, "render", "issues/2026-11-23.md", "--channel", "plaintext")
    if override:  # the documented way to replace a channel: the replacement says so
        assert r.returncode == 0 and r.stdout.startswith("IMPOSTOR\n"), r.stderr
        return
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "channel 'plaintext' is registered twice" in r.stderr
    assert "publisher 0.1.0 (publisher.channels.plaintext:PlainTextChannel)" in r.stderr
    assert "impostor 0.1 (impostor:Impostor)" in r.stderr and "override = True" in r.stderr


@pytest.mark.slow
def test_the_suite_stays_green_with_a_third_party_channel_installed(third_party) -> None:
    """The tests that cover every channel cover the project's own: a third-party channel beside
    them neither breaks them nor is held to the built-in channels' expectations."""
    _, env = third_party
    probe = subprocess.run([sys.executable, "-c", "from publisher.channels.base import available_channels as a; "
                            "print(' '.join(a()))"], env=env, capture_output=True, text=True, timeout=60)
    assert "relay" in probe.stdout.split(), probe.stderr  # the third-party channel really is installed
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:randomly", "-p", "no:cacheprovider",
                        "tests/test_channels_all.py", "tests/test_newcomer.py", "tests/test_golden.py"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout.splitlines()[-1] and "failed" not in r.stdout.splitlines()[-1]


# ---- the channel that mails subscribers is found by its declaration, not its name ------------


class _EntryPoint:
    """An installed entry point as importlib.metadata gives it (name, value, dist, load)."""

    def __init__(self, name: str, cls) -> None:
        self.name, self.cls, self.value, self.dist = name, cls, f"thirdparty:{cls.__name__}", None

    def load(self):
        return self.cls


@pytest.fixture
def registry_of(monkeypatch):
    """Replace the installed channels with `{name: class}` for one test (caches cleared)."""
    from publisher import registry

    def install(channels: dict) -> None:
        monkeypatch.setattr(registry, "_entry_points", lambda: {n: _EntryPoint(n, c) for n, c in channels.items()})
        registry.mail_channel.cache_clear()

    yield install
    registry.mail_channel.cache_clear()


def test_the_built_in_mail_channel_is_found_by_its_declaration(tmp_path: Path) -> None:
    from publisher.channels.base import available_channels, get_channel

    from publisher.registry import mail_channel, mail_table
    from publisher.settings import load_settings

    declared = [n for n in available_channels() if get_channel(n).mails_subscribers]
    assert declared == ["email"] == [mail_channel()]
    (tmp_path / "publisher.toml").write_text("", encoding="utf-8")
    settings = load_settings(tmp_path / "publisher.toml")
    assert mail_table(settings) is settings["email"]


def test_the_mail_stack_reads_the_table_of_the_channel_that_declares_it(registry_of, tmp_path: Path) -> None:
    """Rename the mailing channel ('letter'): every key the mail stack asks for, and every message
    that names one, follows the channel's name — no `[email]` is looked up by name."""
    import dataclasses

    from publisher.channels.email import EmailChannel

    from publisher.errors import ConfigError, PublisherError
    from publisher.mailmsg import check_unsubscribe_url, from_mailbox
    from publisher.settings import load_settings
    from publisher.stores import open_subscribers
    from publisher.transports.providers import provider_name

    class Letter(EmailChannel):
        name = "letter"

    class Plain(EmailChannel):  # the built-in table name, no longer the one that mails
        mails_subscribers = False

    (tmp_path / "publisher.toml").write_text("", encoding="utf-8")
    base = load_settings(tmp_path / "publisher.toml")
    letter = {**base["email"], "from_address": "ed@letter.example", "from_name": "Letter",
              "subscribers_db": "", "unsubscribe_url": "ftp://x/{token}", "transport": "pigeon"}
    settings = dataclasses.replace(base, data={**base.data, "letter": letter})
    registry_of({"email": Plain, "letter": Letter})

    assert from_mailbox(settings)[1] == "ed@letter.example"  # not [email] from_address
    with pytest.raises(PublisherError, match=r"\[letter\] subscribers_db is not set"):
        open_subscribers(settings)
    with pytest.raises(ConfigError, match=r"\[letter\] unsubscribe_url"):
        check_unsubscribe_url(settings)
    with pytest.raises(ConfigError, match=r"\[letter\] transport must be one of"):
        provider_name(settings)


@pytest.mark.parametrize("mailing", [(), ("email", "letter")])
def test_exactly_one_channel_mails_subscribers(registry_of, mailing: tuple) -> None:
    from publisher.channels.email import EmailChannel

    from publisher.errors import ConfigError
    from publisher.registry import mail_channel

    classes = {n: type(n.title(), (EmailChannel,), {"name": n, "mails_subscribers": n in mailing})
               for n in ("email", "letter")}
    registry_of(classes)
    with pytest.raises(ConfigError, match="exactly one installed channel must mail subscribers") as err:
        mail_channel()
    for name in mailing:
        assert repr(name) in str(err.value)


def test_the_mail_transport_carries_only_the_channel_that_mails(tmp_path: Path) -> None:
    """The table the mail transport reads is the table of the channel it carries: a rendition of
    another channel routed to it is refused before anything is read or sent."""
    from publisher.channels.base import Rendition

    from publisher.errors import TransportError
    from publisher.settings import load_settings
    from publisher.transports.base import PushContext
    from publisher.transports.email import EmailTransport

    (tmp_path / "publisher.toml").write_text("", encoding="utf-8")
    settings = load_settings(tmp_path / "publisher.toml")
    other = Rendition(channel="relay", issue="2026-11-23", body="<p>x</p>", media_type="text/html",
                      filename="2026-11-23.html")
    with pytest.raises(TransportError, match="carries the channel that mails subscribers \\('email'\\), not 'relay'"):
        EmailTransport().push(other, PushContext(settings=settings, ledger=None, issue=None))
