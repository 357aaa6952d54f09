"""A newcomer's first day: the friction points of issue 11, each with the test that would break."""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import subprocess
import sys
import urllib.parse
from io import BytesIO
from pathlib import Path

import pytest

from publisher.errors import ConfigError
from publisher.settings import load_settings
from tests.conftest import EXAMPLES

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, **(env or {})}
    full.pop("PUBLISHER_CONFIG", None)
    if "NO_COLOR" not in (env or {}):
        full.pop("NO_COLOR", None)
    return subprocess.run([sys.executable, "-m", "publisher", *args], capture_output=True, text=True,
                          cwd=cwd, env=full)


def run_in_terminal(*args: str, cwd: Path, env: dict | None = None) -> tuple[int, str]:
    """Run the command with stdout and stderr on a pseudo-terminal, as a person at a shell would."""
    full = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100", **(env or {})}
    full.pop("PUBLISHER_CONFIG", None)
    if "NO_COLOR" not in (env or {}):
        full.pop("NO_COLOR", None)
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "publisher", *args], stdin=slave, stdout=slave,
                            stderr=slave, cwd=cwd, env=full, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture
def demo(project: Path) -> Path:
    shutil.copytree(EXAMPLES / "issues", project / "issues", dirs_exist_ok=True)
    with (project / "publisher.toml").open("a", encoding="utf-8") as f:  # zhihu: the images' public home
        f.write('[newsletter]\nimage_base_url = "https://images.mydomain.example/issues/"\n')
    return project


# ---- [channels] enabled is checked when the config loads -------------------------------------


def test_unknown_enabled_channel_is_an_error_naming_key_and_the_available_ones(project: Path) -> None:
    (project / "publisher.toml").write_text('[channels]\nenabled = ["github", "wechta"]\n', encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_settings(project / "publisher.toml")
    message = str(exc.value)
    assert "[channels] enabled: unknown channel 'wechta'" in message and str(project / "publisher.toml") in message
    from publisher.channels.base import available_channels

    assert f"available channels: {', '.join(available_channels())}" in message
    assert {"email", "github", "telegram", "wechat"} <= set(available_channels())
    proc = run("build", cwd=project)
    assert proc.returncode == 1 and "unknown channel 'wechta'" in proc.stderr and "Traceback" not in proc.stderr


# ---- check takes what build and push take ---------------------------------------------------


def test_check_accepts_a_date_the_issues_folder_or_nothing(demo: Path) -> None:
    by_date = run("check", "--offline", "2026-11-23", cwd=demo)
    assert by_date.returncode == 0, by_date.stderr
    assert "2026-11-23.md: ok" in by_date.stdout and "2026-11-09" not in by_date.stdout
    for args in (("issues",), ()):
        proc = run("check", "--offline", *args, cwd=demo)
        assert proc.returncode == 0, proc.stderr
        assert "2026-11-23.md: ok" in proc.stdout and "2026-11-09.md: ok" in proc.stdout
    missing = run("check", "--offline", "2031-01-01", cwd=demo)
    assert missing.returncode == 1 and "no issue 2031-01-01" in missing.stderr and "[paths] issues" in missing.stderr
    empty = demo / "empty"
    empty.mkdir()
    proc = run("check", "--offline", str(empty), cwd=demo)
    assert proc.returncode == 1 and "no issue files (YYYY-MM-DD.md) in folder" in proc.stderr


# ---- push --to ------------------------------------------------------------------------------


@pytest.mark.parametrize("addr", ["not-an-address", "a@b", "me@example.net, you@example.net", "<a@b.cn>"])
def test_push_to_refuses_what_is_not_an_address(demo: Path, addr: str) -> None:
    proc = run("push", "2026-11-23", "-c", "email", "--to", addr, cwd=demo)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--to" in proc.stderr and "is not an email address" in proc.stderr and "Traceback" not in proc.stderr
    assert not (demo / "publisher.db").exists()  # nothing was attempted, no ledger


# ---- build: progress, -q --------------------------------------------------------------------


def test_build_progress_lines_when_piped_and_quiet(demo: Path) -> None:
    proc = run("build", "--force", "-j", "1", cwd=demo)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # no path per file any more
    lines = proc.stderr.splitlines()
    # the progress lines the scale merge kept (one per tenth of the work, README: publisher build)
    assert lines[:2] == ["rendered 1/2 issue(s)", "rendered 2/2 issue(s)"]
    assert lines[-1].startswith("built 12 rendition(s), 0 up to date, 0 failed")
    quiet = run("build", "--force", "-q", cwd=demo)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    # -q still reports a failure
    (demo / "issues" / "2026-11-30.md").write_text("---\ndate: 2026-11-30\nfoo: 1\n---\n", encoding="utf-8")
    failed = run("build", "-q", cwd=demo)
    assert failed.returncode == 1 and "2026-11-30.md:3: error: unknown front-matter key 'foo'" in failed.stderr
    assert "built" not in failed.stderr


def test_build_shows_a_progress_bar_on_a_terminal(demo: Path) -> None:
    rc, out = run_in_terminal("build", "--force", "-j", "1", cwd=demo)
    assert rc == 0, out
    assert "building" in out and "2/2" in out and "[1/2]" not in out
    assert "built 12 rendition(s)" in out


# ---- status ---------------------------------------------------------------------------------


def _ledger_with_a_long_error(demo: Path) -> str:
    from publisher.stores.ledger import Ledger

    error = "connection refused by smtp.example.net:587 after 5 retries; " + "x" * 300 + " END"
    ledger = Ledger(demo / "publisher.db")
    ledger.begin("2026-11-23", "email")
    ledger.fail("2026-11-23", "email", error)
    ledger.begin("2026-11-23", "plaintext")
    ledger.finish("2026-11-23", "plaintext", remote_id="outbox/2026-11-23/2026-11-23.txt")
    return error


def test_status_piped_is_one_line_per_row_and_json(demo: Path) -> None:
    error = _ledger_with_a_long_error(demo)
    proc = run("status", cwd=demo)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split("\t") == ["issue", "channel", "state", "attempts", "remote id / url", "updated",
                                    "last error"]
    assert len(lines) == 3  # never wrapped, whatever the error's length
    row = next(line.split("\t") for line in lines if "\temail\t" in line)
    assert row[:4] == ["2026-11-23", "email", "failed", "1"] and row[-1] == error
    data = json.loads(run("status", "--format", "json", cwd=demo).stdout)["pushes"]
    assert {(r["channel"], r["state"]) for r in data} == {("email", "failed"), ("plaintext", "done")}
    assert next(r for r in data if r["channel"] == "email")["last_error"] == error
    assert json.loads(run("status", "2031-01-01", "--format", "json", cwd=demo).stdout)["pushes"] == []


def test_status_on_a_terminal_is_a_table(demo: Path) -> None:
    _ledger_with_a_long_error(demo)
    rc, out = run_in_terminal("status", cwd=demo)
    assert rc == 0, out
    assert re.search(r"[┃│] issue", ANSI.sub("", out)) and "\t" not in out, out


# ---- NO_COLOR -------------------------------------------------------------------------------


def test_no_color_is_respected_on_a_terminal(demo: Path) -> None:
    _ledger_with_a_long_error(demo)
    for args in (("check", "--offline", "nope.md"), ("status",)):
        rc, coloured = run_in_terminal(*args, cwd=demo)
        assert ANSI.search(coloured), (args, coloured)  # colours on a terminal by default …
        rc, plain = run_in_terminal(*args, cwd=demo, env={"NO_COLOR": "1"})
        assert not ANSI.search(plain), (args, plain)  # … and none with NO_COLOR
        assert ANSI.sub("", coloured).split() == plain.split()


# ---- the unsubscribe page speaks the newsletter's language -----------------------------------


def test_unsubscribe_pages_are_in_chinese(tmp_path: Path) -> None:
    from publisher.subscribers import SubscriberDB
    from publisher.unsubscribe import make_app, make_token

    db_path = tmp_path / "subscribers.db"
    db = SubscriberDB(db_path)
    db.add_many([("reader@example.net", "", "")])
    app = make_app("s3cret", "news.example.net", db_path, "嵌入式AI简报")

    def call(method: str, query: str, body: bytes = b"") -> tuple[str, str]:
        status = []
        environ = {"REQUEST_METHOD": method, "PATH_INFO": "/unsubscribe", "QUERY_STRING": query,
                   "CONTENT_LENGTH": str(len(body)), "wsgi.input": BytesIO(body)}
        out = b"".join(app(environ, lambda s, h: status.append(s)))
        return status[0], out.decode("utf-8")

    token = make_token("s3cret", "news.example.net", "reader@example.net")
    status, page = call("GET", "token=" + urllib.parse.quote(token))
    assert status.startswith("200") and '<html lang="zh' in page
    assert "<title>退订</title>" in page and "确认退订" in page and "reader@example.net" in page
    status, page = call("GET", "token=forged")
    assert status.startswith("400") and "链接无效" in page and "没有做任何更改" in page
    assert not re.search(r"[A-Za-z]{4,} [a-z]{3,} [a-z]{3,}", re.sub(r"<[^>]+>", "", page))  # no English prose
    body = b"token=" + urllib.parse.quote(token).encode()
    status, page = call("POST", "", body)
    assert status.startswith("200") and "<title>已退订</title>" in page and "不会再收到嵌入式AI简报的邮件" in page
