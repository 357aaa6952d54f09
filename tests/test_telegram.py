"""The Telegram channel (channels/telegram/): Telegram's HTML, a long post split into messages under
4,096 characters at block boundaries with the footer last, each message a file of `render --out`,
and a push through a local HTTP server speaking the Bot API's `sendMessage` that resumes per
message after a refusal, a kill after a message, and a kill in the middle of one."""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from publisher.channels.telegram.limits import MESSAGE_MAX_CHARS
from publisher.channels.telegram.split import blocks, split_messages, visible_length

from tests.conftest import EXAMPLES

TOKEN = "123456:TEST-token-value"
ALLOWED = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "blockquote",
           "tg-spoiler", "span"}


class _Entities(HTMLParser):
    """Telegram's parse_mode HTML, as its documentation states it: the allowed tags, properly
    nested and closed; the text is what remains, entities decoded."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.text: list[str] = []
        self.error: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag not in ALLOWED:
            self.error = self.error or f"Bad Request: can't parse entities: Unsupported start tag \"{tag}\""
        if tag == "a" and not dict(attrs).get("href", "").startswith(("http://", "https://", "tg://")):
            self.error = self.error or "Bad Request: can't parse entities: bad href"
        self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.error = self.error or f"Bad Request: can't parse entities: unexpected end tag \"{tag}\""

    def handle_data(self, data):
        self.text.append(data)


class BotApi:
    """sendMessage as core.telegram.org/bots/api documents it: JSON body, the token in the path,
    1-4,096 characters after entities parsing, {"ok": true, "result": Message} or an error."""

    def __init__(self):
        self.sent: list[dict] = []
        self.requests = 0
        self.refuse_at: int | None = None  # the n-th request gets a 400 (nothing sent)
        self.rate_limit_at: int | None = None  # the n-th request gets a 429 with retry_after 1
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self._reply(*api.answer(self.path, body))

            def _reply(self, status, data):
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._lock = threading.Lock()

    def answer(self, path: str, body: dict) -> tuple[int, dict]:
        with self._lock:
            self.requests += 1
            n = self.requests
            if path != f"/bot{TOKEN}/sendMessage":
                return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
            if n == self.rate_limit_at:
                return 429, {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 1",
                             "parameters": {"retry_after": 1}}
            if n == self.refuse_at:
                return 400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}
            parser = _Entities()
            parser.feed(body.get("text", ""))
            parser.close()
            if body.get("parse_mode") != "HTML" or parser.error or parser.stack:
                return 400, {"ok": False, "error_code": 400,
                             "description": parser.error or "Bad Request: can't parse entities"}
            text = "".join(parser.text)
            if not text.strip():
                return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"}
            if len(text.encode("utf-16-le")) // 2 > MESSAGE_MAX_CHARS:
                return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message is too long"}
            self.sent.append(body)
            return 200, {"ok": True, "result": {"message_id": 1000 + len(self.sent), "text": text,
                                                "chat": {"id": body["chat_id"]}}}


@pytest.fixture
def bot():
    api = BotApi()
    thread = threading.Thread(target=api.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield api
    api.server.shutdown()
    api.server.server_close()


def long_issue(folder: Path, items: int = 40) -> Path:
    """The example issue with `items` more news items of ~450 characters: ~5 messages."""
    text = (EXAMPLES / "issues" / "2026-11-23.md").read_text(encoding="utf-8")
    extra = "".join(
        f"- [示例新闻{k} <script>alert(1)</script> & 1<2 | 示例来源](https://example.com/n/{k}?a=1&b=2)\n"
        f"摘要：{'这是一段很长的摘要，用来把一期简报撑到好几条消息。' * 18}第{k}条。\n"
        for k in range(items))
    text = text.replace("## 业界新闻\n\n", "## 业界新闻\n\n" + extra, 1)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(EXAMPLES / "issues" / "images", folder / "images", dirs_exist_ok=True)
    path = folder / "2026-11-23.md"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def project(tmp_path: Path, bot: BotApi) -> tuple[Path, dict]:
    long_issue(tmp_path / "issues")
    (tmp_path / "publisher.toml").write_text(
        '[paths]\nissues = "issues"\nout = "out"\nledger = "publisher.db"\n'
        '[channels]\nenabled = ["telegram"]\n'
        f'[telegram]\nchat_id = "@neuraltalk_test"\napi_base = "{bot.url}"\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PUBLISHER_CONFIG", "PUBLISHER_PAUSE_AT")}
    env["PUBLISHER_TELEGRAM_TOKEN"] = TOKEN
    return tmp_path, env


def run(project: Path, env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "publisher", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=timeout)


def rendition(path: Path):
    from publisher.pipeline import load, render
    from publisher.settings import load_settings

    issue, _ = load(path)
    return render(issue, "telegram", load_settings(cwd=path.parent))


# ---- rendering and splitting ------------------------------------------------------------------


def test_a_long_post_is_split_at_block_boundaries_under_the_limit_footer_last(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("PUBLISHER_CONFIG", raising=False)
    r = rendition(long_issue(tmp_path / "issues"))
    assert len(r.messages) >= 4
    whole = blocks("\n\n".join(r.messages))
    for message in r.messages:
        parser = _Entities()
        parser.feed(message)
        assert parser.error is None and parser.stack == [], message[:200]
        assert 0 < visible_length(message) <= MESSAGE_MAX_CHARS
        # nothing was cut inside a block: each message is whole blocks of the post
        assert all(b in whole for b in blocks(message))
    assert "阅读原文" in r.messages[-1] and "本作品采用" in r.messages[-1]
    assert all("阅读原文" not in m for m in r.messages[:-1])
    # hostile titles are text: no tag of theirs reaches Telegram
    assert "<script>" not in r.body and "&lt;script&gt;" in r.body and "1&lt;2" in r.body
    assert 'href="https://example.com/n/3?a=1&amp;b=2"' in r.body
    # every item made it, in order
    positions = [r.body.index(f"第{k}条。") for k in range(40)]
    assert positions == sorted(positions)


def test_one_block_over_the_limit_is_cut_at_line_ends_and_loses_no_text() -> None:
    code = "\n".join(f"line {k} " + "x" * 90 for k in range(120))  # ~12,000 characters of <pre>
    body = f"<b>title</b>\n\n<pre>{html.escape(code, quote=False)}</pre>\n\nafter"
    messages = split_messages(body, "<i>footer</i>", MESSAGE_MAX_CHARS)
    assert all(visible_length(m) <= MESSAGE_MAX_CHARS for m in messages)
    text = "".join(html.unescape(m.replace("<pre>", "").replace("</pre>", "")) for m in messages)
    assert all(f"line {k} " in text for k in range(120))
    assert messages[-1].endswith("<i>footer</i>")
    one_line = "字" * 10_000  # a single line with no break at all
    parts = split_messages(one_line, "", MESSAGE_MAX_CHARS)
    assert "".join(parts) == one_line and all(visible_length(p) <= MESSAGE_MAX_CHARS for p in parts)
    emoji = "😀" * 3000  # two UTF-16 units each: Telegram counts 6,000
    assert all(visible_length(p) <= MESSAGE_MAX_CHARS for p in split_messages(emoji, "", MESSAGE_MAX_CHARS))


@pytest.mark.neutral  # the push runs in a subprocess, with the shipped defaults
def test_render_out_writes_each_message_as_a_file(project) -> None:
    root, env = project
    r = run(root, env, "render", "issues/2026-11-23.md", "-c", "telegram", "--out", "rendered")
    assert r.returncode == 0, r.stderr
    files = sorted((root / "rendered").glob("2026-11-23.*.html"))
    assert len(files) >= 4 and files[0].name == "2026-11-23.1.html"
    texts = [f.read_text(encoding="utf-8") for f in files]
    assert "\n\n".join(texts) + "\n" == (root / "rendered" / "2026-11-23.html").read_text(encoding="utf-8")
    check = run(root, env, "check", "--offline", "issues/2026-11-23.md")
    assert "telegram message" not in check.stdout + check.stderr


# ---- the push ---------------------------------------------------------------------------------


@pytest.mark.neutral  # the push runs in a subprocess, with the shipped defaults
def test_push_sends_every_message_in_order_once(project, bot: BotApi) -> None:
    root, env = project
    expected = rendition(root / "issues" / "2026-11-23.md").messages
    bot.rate_limit_at = 2  # a 429 with retry_after is waited out, not a failure
    r = run(root, env, "push", "issues/2026-11-23.md", "-c", "telegram")
    assert r.returncode == 0, r.stdout + r.stderr
    assert [m["text"] for m in bot.sent] == list(expected)
    assert all(m["chat_id"] == "@neuraltalk_test" and m["parse_mode"] == "HTML" for m in bot.sent)
    assert TOKEN not in r.stdout + r.stderr
    again = run(root, env, "push", "issues/2026-11-23.md", "-c", "telegram")
    assert again.returncode == 0 and len(bot.sent) == len(expected), again.stdout
    status = run(root, env, "status", "2026-11-23")
    assert "telegram" in status.stdout and "done" in status.stdout and f"messages {len(expected)}" in status.stdout


@pytest.mark.neutral  # the push runs in a subprocess, with the shipped defaults
def test_a_refused_message_is_resumed_without_resending_the_sent_ones(project, bot: BotApi) -> None:
    root, env = project
    expected = rendition(root / "issues" / "2026-11-23.md").messages
    bot.refuse_at = 3
    r = run(root, env, "push", "issues/2026-11-23.md", "-c", "telegram")
    assert r.returncode == 1 and "chat not found" in r.stdout + r.stderr
    assert len(bot.sent) == 2 and TOKEN not in r.stdout + r.stderr
    r = run(root, env, "push", "issues/2026-11-23.md", "-c", "telegram")
    assert r.returncode == 0, r.stdout + r.stderr
    assert [m["text"] for m in bot.sent] == list(expected)  # 1 and 2 once, then 3 …


def _killed_at(root: Path, env: dict, point: str) -> None:
    pause = root / "paused"
    proc = subprocess.Popen([sys.executable, "-m", "publisher", "push", "issues/2026-11-23.md", "-c", "telegram"],
                            cwd=root, env={**env, "PUBLISHER_PAUSE_AT": point, "PUBLISHER_PAUSE_FILE": str(pause)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not pause.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert pause.exists(), "the push never reached " + point
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.neutral  # the push runs in a subprocess, with the shipped defaults
def test_a_kill_after_a_message_resumes_with_the_next(project, bot: BotApi) -> None:
    root, env = project
    expected = rendition(root / "issues" / "2026-11-23.md").messages
    _killed_at(root, env, "telegram:sent")  # message 1 sent and recorded
    assert len(bot.sent) == 1
    r = run(root, env, "push", "issues/2026-11-23.md", "-c", "telegram")
    assert r.returncode == 0, r.stdout + r.stderr
    assert [m["text"] for m in bot.sent] == list(expected)


@pytest.mark.neutral  # the push runs in a subprocess, with the shipped defaults
def test_a_kill_inside_a_message_stops_the_rerun_until_forced(project, bot: BotApi) -> None:
    root, env = project
    expected = rendition(root / "issues" / "2026-11-23.md").messages
    _killed_at(root, env, "telegram:sending")  # message 1 recorded as being sent, not sent
    r = run(root, env, "push", "issues/2026-11-23.md", "-c", "telegram")
    assert r.returncode == 1 and "may have been sent" in r.stdout + r.stderr and bot.sent == []
    r = run(root, env, "push", "issues/2026-11-23.md", "-c", "telegram", "--force")
    assert r.returncode == 0, r.stdout + r.stderr
    assert [m["text"] for m in bot.sent] == list(expected)


@pytest.mark.neutral  # the push runs in a subprocess, with the shipped defaults
def test_a_changed_post_after_a_partial_push_is_refused(project, bot: BotApi) -> None:
    root, env = project
    bot.refuse_at = 2
    assert run(root, env, "push", "issues/2026-11-23.md", "-c", "telegram").returncode == 1
    source = root / "issues" / "2026-11-23.md"
    source.write_text(source.read_text(encoding="utf-8").replace("示例新闻0", "改过的新闻0"), encoding="utf-8")
    r = run(root, env, "push", "issues/2026-11-23.md", "-c", "telegram")
    assert r.returncode == 1 and "changed since it was sent" in r.stdout + r.stderr
    assert len(bot.sent) == 1


@pytest.mark.neutral  # the push runs in a subprocess, with the shipped defaults
def test_missing_token_or_chat_is_a_config_error_before_anything_is_sent(project, bot: BotApi) -> None:
    root, env = project
    r = run(root, {k: v for k, v in env.items() if k != "PUBLISHER_TELEGRAM_TOKEN"},
            "push", "issues/2026-11-23.md", "-c", "telegram")
    assert r.returncode == 1 and "PUBLISHER_TELEGRAM_TOKEN" in r.stdout + r.stderr and bot.requests == 0
    assert "Traceback" not in r.stderr
