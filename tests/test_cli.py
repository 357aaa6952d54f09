"""The command line: errors a user can cause are one line with file:line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CORPUS, EXAMPLES, ROOT, requires_shared


def run(*args, cwd=None, env=None):
    full_env = {**os.environ, **(env or {})}
    full_env.pop("PUBLISHER_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "publisher.cli", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=full_env)


def assert_clean_error(proc, *needles):
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_help_lists_the_core_commands():
    proc = run("--help")
    assert proc.returncode == 0
    for name in ("import", "check", "render"):
        assert name in proc.stdout


def test_check_good_issue():
    proc = run("--config", str(EXAMPLES / "publisher.toml"), "check", str(EXAMPLES / "issues" / "2026-11-23.md"))
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stdout


def test_check_bad_issue_prints_file_line(tmp_path):
    bad = tmp_path / "2020-01-01.md"
    bad.write_text("---\ndate: 2020-01-01\nfoo: 1\n---\n# 嵌入式AI简报 (2020-01-01)\n", encoding="utf-8")
    proc = run("check", str(bad))
    assert_clean_error(proc, f"{bad}:3: error: unknown front-matter key 'foo'")


def test_missing_file(tmp_path):
    proc = run("check", str(tmp_path / "nope.md"))
    assert_clean_error(proc, "nope.md: error: no such file")


def test_bad_config_names_file_and_key(tmp_path):
    cfg = tmp_path / "publisher.toml"
    cfg.write_text('[email]\nfrom_adress = "x@y.z"\n', encoding="utf-8")
    proc = run("--config", str(cfg), "render", str(EXAMPLES / "issues" / "2026-11-23.md"), "--channel", "github")
    assert_clean_error(proc, str(cfg), "unknown key [email] from_adress")


def test_a_channel_pushed_without_being_enabled_reads_its_own_table(tmp_path):
    """Its defaults are in the configuration (declared by the channel, not config/default.toml):
    the push fails naming the key to set, not with a missing table."""
    (tmp_path / "publisher.toml").write_text('[channels]\nenabled = ["plaintext"]\n', encoding="utf-8")
    proc = run("push", str(EXAMPLES / "issues" / "2026-11-23.md"), "--channel", "github", cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out and "KeyError" not in out, out
    assert "[github] repo_path is not set" in out


def test_unknown_channel(tmp_path):
    proc = run("render", str(EXAMPLES / "issues" / "2026-11-23.md"), "--channel", "myspace", cwd=tmp_path)
    assert_clean_error(proc, "unknown channel 'myspace'")


@requires_shared
def test_import_command(tmp_path):
    proc = run("import", str(CORPUS / "2020-07-18.md"), str(CORPUS / "2019-03-31.md"), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "2020-07-18.md").is_file() and (tmp_path / "2019-03-31.md").is_file()
    assert "2019-03-31.md:5: warning: no 导读" in proc.stderr  # the guess it made is reported, with its line
    assert "2019-03-31.md:72: warning" in proc.stderr  # the old license, kept in the front matter


def test_import_of_a_non_issue_fails_cleanly(tmp_path):
    junk = tmp_path / "junk.md"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    proc = run("import", str(junk), "--out", str(tmp_path / "out"))
    assert_clean_error(proc, "junk.md")
    assert not (tmp_path / "out" / "junk.md").exists()


@pytest.mark.parametrize("argv", [["render"], ["push"], ["import", "x.md"]])
def test_usage_errors_exit_2_without_traceback(argv):
    proc = run(*argv)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "Usage" in proc.stderr


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "publisher"
    assert exe.exists(), "the `publisher` console script is missing from the venv"


def test_render_email_out_writes_html_text_and_eml(tmp_path):
    import email
    from email import policy

    proc = run("render", str(EXAMPLES / "issues" / "2026-11-23.md"), "--channel", "email", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    for suffix in (".html", ".txt", ".eml"):
        assert (tmp_path / f"2026-11-23{suffix}").is_file()
    msg = email.message_from_bytes((tmp_path / "2026-11-23.eml").read_bytes(), policy=policy.default)
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert "%%UNSUBSCRIBE_URL%%" not in msg.get_body(("html",)).get_content()
