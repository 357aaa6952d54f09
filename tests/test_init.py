"""A newcomer's own newsletter (issue 25): neutral defaults, `publisher init`, refusing what is not
yours, config discovery, scriptable output, subscribers export/import. One test per friction point."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from publisher.errors import ConfigError
from publisher.settings import load_settings
from tests.conftest import EXAMPLES, ROOT, toml_dump

FOREIGN = ("NeuralTalk", "ysh329", "example.org", "嵌入式", "知识共享")
INIT = ["init", "--name", "My News", "--sender", "news@mydomain.example",
        "--site", "https://news.mydomain.example", "--yes"]


def run(*args: str, cwd: Path, env: dict | None = None, input: str | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, **(env or {})}
    full.pop("PUBLISHER_CONFIG", None)
    full["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "publisher", *args], capture_output=True, text=True, cwd=cwd,
                          env=full, input=input, timeout=300)


@pytest.fixture
def news(tmp_path: Path) -> Path:
    proc = run(*INIT, "news", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return tmp_path / "news"


# ---- neutral built-in defaults --------------------------------------------------------------


@pytest.mark.neutral
def test_the_shipped_defaults_hold_no_newsletters_identity() -> None:
    from publisher.registry import available_channels, load_channel

    # the core's defaults and every channel's own tables (the [email], [github], [wechat] defaults
    # live in those channels' `config`)
    texts = [(ROOT / "config" / "default.toml").read_text(encoding="utf-8")]
    texts += [load_channel(name).config for name in available_channels()]
    for text in texts:
        body = "\n".join(line.split("#")[0] for line in text.splitlines())  # values, not comments
        for word in ("NeuralTalk", "ysh329", "嵌入式", "creativecommons", "embedded-ai"):
            assert word not in body, word
    # the real declarations, not the suite's NeuralTalk overlay: the example.org placeholder
    assert 'from_address = "newsletter@example.org"' in load_channel("email").config
    profile = tomllib.loads((EXAMPLES / "publisher.toml").read_text(encoding="utf-8"))
    assert profile["newsletter"]["account"] == "NeuralTalk"  # the identity moved to the example profile
    assert "ysh329" in profile["email"]["view_url"]


@pytest.mark.neutral
def test_neutral_defaults_render_every_channel_without_anyones_footer(tmp_path: Path) -> None:
    from publisher.pipeline import context_for, load, render

    settings = load_settings(cwd=tmp_path)
    from publisher.mailmsg import sender_name

    assert settings["email"]["view_url"] == "" and sender_name(settings) == "Newsletter"
    issue, _ = load(EXAMPLES / "issues" / "2026-11-09.md")  # no local images
    for channel in ("github", "wechat", "email", "zhihu", "aijishu", "plaintext"):
        rendition = render(issue, channel, settings, context_for(settings, issue))
        texts = [rendition.body, *dict(rendition.parts).values()]
        for text in texts:
            for word in ("ysh329", "NeuralTalk", "知识共享", "在浏览器中查看", "wechat_qrcode", 'src=""', "()"):
                assert word not in text, (channel, word)


def test_the_example_profile_still_renders_neuraltalk(tmp_path: Path) -> None:
    proc = run("--config", str(EXAMPLES / "publisher.toml"), "render", str(EXAMPLES / "issues" / "2026-11-23.md"),
               "--channel", "github", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "- WeChat: NeuralTalk" in proc.stdout and "知识共享" in proc.stdout


# ---- publisher init -------------------------------------------------------------------------


def test_init_writes_an_identity_of_its_own_and_the_sample_works(news: Path) -> None:
    config = tomllib.loads((news / "publisher.toml").read_text(encoding="utf-8"))
    assert config["newsletter"]["name"] == "My News"
    assert config["email"]["from_address"] == "news@mydomain.example"
    assert config["email"]["view_url"] == "https://news.mydomain.example/{date}.html"
    assert config["subscribe"]["confirm_url"] == "https://news.mydomain.example/confirm?token={token}"
    assert config["newsletter"]["license_name"] == ""  # none unless chosen
    assert config["newsletter"]["qr_image"] == ""  # no file nobody has (it failed once web/wechat was on)
    assert config["channels"]["enabled"] == ["email", "web", "plaintext"]
    issues = list((news / "issues").glob("*.md"))
    assert len(issues) == 1 and (news / "issues" / "images" / "pipeline.png").stat().st_size > 1000
    ignore = (news / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert {"*.db", "/build/", "*.db-wal"} <= set(ignore)
    for cmd in (["check", "--offline"], ["build"], ["push", str(issues[0]), "-c", "email", "--dry-run"]):
        proc = run(*cmd, cwd=news)
        assert proc.returncode == 0, (cmd, proc.stderr)
        for word in FOREIGN:
            assert word not in proc.stdout + proc.stderr, (cmd, word)
    for path in (news / "build").rglob("*"):
        if path.is_file() and path.suffix in (".html", ".txt", ".md", ".xml"):
            text = path.read_text(encoding="utf-8")
            for word in FOREIGN:
                assert word not in text, (path, word)


def test_init_prints_the_next_commands_and_never_overwrites(tmp_path: Path) -> None:
    first = run(*INIT, "news", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "cd news" in first.stdout and "publisher check" in first.stdout and "publisher build" in first.stdout
    before = (tmp_path / "news" / "publisher.toml").read_bytes()
    again = run("init", "--name", "Other", "--sender", "o@other.example", "--site", "https://other.example",
                "--yes", "news", cwd=tmp_path)
    assert again.returncode == 1 and "already exists" in again.stderr and "Traceback" not in again.stderr
    assert (tmp_path / "news" / "publisher.toml").read_bytes() == before


def test_init_keeps_an_existing_gitignore_and_adds_only_what_it_lacks(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("node_modules/\n*.db\n", encoding="utf-8")
    proc = run(*INIT, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert lines[:2] == ["node_modules/", "*.db"] and lines.count("*.db") == 1 and "/build/" in lines


def test_init_asks_for_what_is_not_given(tmp_path: Path) -> None:
    answers = "Weekly Bits\n每周一点新东西\nbits@weekly.example\nhttps://weekly.example/news\nCC-BY-4.0\nemail,wechat\nWeeklyBits\n"
    proc = run("init", cwd=tmp_path, input=answers)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = tomllib.loads((tmp_path / "publisher.toml").read_text(encoding="utf-8"))
    assert config["newsletter"]["tagline"] == "每周一点新东西"
    assert config["newsletter"]["account"] == "WeeklyBits"
    assert config["newsletter"]["license_url"] == "https://creativecommons.org/licenses/by/4.0/"
    assert config["email"]["unsubscribe_url"] == "https://weekly.example/news/unsubscribe?token={token}"
    assert config["channels"]["enabled"] == ["email", "wechat"]
    assert "[web]" not in (tmp_path / "publisher.toml").read_text(encoding="utf-8")


@pytest.mark.parametrize("option, value, says", [
    ("--sender", "not an address", "--sender"),
    ("--site", "news.example", "--site"),
    ("--license", "GPL", "--license"),
    ("--channels", "email,fax", "--channels"),
])
def test_init_refuses_a_bad_answer_before_writing_anything(tmp_path: Path, option: str, value: str,
                                                            says: str) -> None:
    args = dict(zip(INIT[1:-1:2], INIT[2:-1:2], strict=True))
    args[option] = value
    proc = run("init", *[x for kv in args.items() for x in kv], "--yes", cwd=tmp_path)
    assert proc.returncode == 1 and says in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_init_yes_without_a_name_is_a_usage_error(tmp_path: Path) -> None:
    proc = run("init", "--yes", cwd=tmp_path)
    assert proc.returncode == 2 and "--yes" in proc.stderr and list(tmp_path.iterdir()) == []


def test_init_works_from_package_data_not_the_source_tree(tmp_path: Path) -> None:
    """The sample comes from publisher.samples (resources), not from examples/ or ../shared."""
    from importlib import resources

    files = {p.name for p in resources.files("publisher.samples").iterdir()}
    assert {"issue.md", "gitignore.txt", "images"} <= files
    sample = resources.files("publisher.samples").joinpath("issue.md").read_text(encoding="utf-8")
    for word in FOREIGN:
        assert word not in sample


def test_a_license_you_choose_is_yours_and_is_shown(tmp_path: Path) -> None:
    proc = run(*INIT[:-1], "--license", "CC-BY-SA-4.0", "--channels", "email,plaintext", "--yes", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    dry = run("push", next(iter((tmp_path / "issues").glob("*.md"))).name[:10], "-c", "email", "--dry-run",
              cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "CC BY-SA 4.0" in dry.stdout and "creativecommons.org/licenses/by-sa/4.0/" in dry.stdout


# ---- push refuses what is not yours ---------------------------------------------------------


def _neuraltalk(section: str, key: str) -> str:
    return tomllib.loads((EXAMPLES / "publisher.toml").read_text(encoding="utf-8"))[section][key]


@pytest.mark.parametrize("section, key, value", [
    ("email", "view_url", _neuraltalk("email", "view_url")),
    ("newsletter", "archive_url", _neuraltalk("newsletter", "archive_url")),
    ("newsletter", "qr_public_url", _neuraltalk("newsletter", "qr_public_url")),
    ("newsletter", "license_badge", _neuraltalk("newsletter", "license_badge")),
    ("newsletter", "project_url", _neuraltalk("newsletter", "project_url")),
])
def test_push_refuses_an_identity_value_of_a_shipped_example(news: Path, section: str, key: str, value: str) -> None:
    config = tomllib.loads((news / "publisher.toml").read_text(encoding="utf-8"))
    config[section][key] = value
    (news / "publisher.toml").write_text(toml_dump(config), encoding="utf-8")
    issue = next(iter((news / "issues").glob("*.md")))
    for channel in ("email", "plaintext"):
        proc = run("push", str(issue), "-c", channel, "--dry-run", cwd=news)
        assert proc.returncode == 1, proc.stdout
        assert f"[{section}] {key} is still the shipped example" in proc.stdout + proc.stderr
    assert not (news / "outbox").exists()


def test_a_placeholder_is_refused_where_it_is_used(news: Path) -> None:
    """The defaults' example.org placeholders: email refuses them; a push elsewhere needs no email."""
    text = (news / "publisher.toml").read_text(encoding="utf-8")
    text = text.replace("https://news.mydomain.example/unsubscribe?token={token}",
                        "https://example.org/unsubscribe?token={token}")
    (news / "publisher.toml").write_text(text, encoding="utf-8")
    issue = next(iter((news / "issues").glob("*.md")))
    email = run("push", str(issue), "-c", "email", "--dry-run", cwd=news)
    assert email.returncode == 1 and "[email] unsubscribe_url is still the shipped example" in email.stdout + email.stderr
    plain = run("push", str(issue), "-c", "plaintext", cwd=news)
    assert plain.returncode == 0, plain.stdout + plain.stderr


@pytest.mark.neutral
def test_require_own_identity_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "publisher.toml").write_text(
        f'[newsletter]\narchive_url = "{_neuraltalk("newsletter", "archive_url")}"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[newsletter\] archive_url is still the shipped example"):
        load_settings(cwd=tmp_path).require_own_identity()


def test_serve_refuses_the_placeholder_confirm_url(news: Path) -> None:
    text = (news / "publisher.toml").read_text(encoding="utf-8")
    text = text.replace("https://news.mydomain.example/confirm?token={token}", "https://example.org/confirm?token={token}")
    (news / "publisher.toml").write_text(text, encoding="utf-8")
    proc = run("serve", "--port", "0", cwd=news, env={"PUBLISHER_UNSUBSCRIBE_SECRET": "s" * 32})
    assert proc.returncode == 1 and "[subscribe] confirm_url is still the shipped example" in proc.stderr


# ---- config discovery -----------------------------------------------------------------------


def test_publisher_toml_is_found_upward_and_status_says_which(news: Path) -> None:
    inside = news / "issues" / "images"
    status = run("status", cwd=inside)
    assert status.returncode == 0, status.stderr
    assert f"config: {news / 'publisher.toml'}" in status.stderr
    as_json = json.loads(run("status", "--format", "json", cwd=inside).stdout)
    assert as_json["config"] == str(news / "publisher.toml") and as_json["folder"] == str(news)
    check = run("check", "--offline", cwd=inside)
    assert check.returncode == 0 and ": ok" in check.stdout
    # a folder with no publisher.toml above it says so
    assert "not found; built-in defaults in use" in run("status", cwd=news.parent).stderr


# ---- scriptable everywhere ------------------------------------------------------------------


def test_build_and_push_speak_json(news: Path) -> None:
    built = run("build", "--format", "json", cwd=news)
    assert built.returncode == 0, built.stderr
    report = json.loads(built.stdout)
    assert report["rendered"] == 3 and report["up_to_date"] == 0 and report["failed"] == 0 and report["errors"] == []
    again = json.loads(run("build", "--format", "json", cwd=news).stdout)
    assert again["rendered"] == 0 and again["up_to_date"] == 3
    issue = next(iter((news / "issues").glob("*.md")))
    dry = run("push", str(issue), "-c", "email", "--dry-run", "--format", "json", cwd=news)
    assert dry.returncode == 0, dry.stderr
    out = json.loads(dry.stdout)  # the sample message went to stderr, not into the JSON
    assert out["ok"] is True and out["channels"][0]["state"] == "dry-run"
    assert out["channels"][0]["details"]["active"] == 0 and "Subject:" in dry.stderr
    pushed = json.loads(run("push", str(issue), "-c", "plaintext", "--format", "json", cwd=news).stdout)
    assert pushed["ok"] is True and pushed["channels"][0]["state"] == "done"
    assert list((news / "outbox").rglob("*.txt")) and pushed["warnings"] == []


def test_schedule_list_and_subscriber_commands_speak_json(news: Path) -> None:
    runs = json.loads(run("schedule", "--list", "--format", "json", cwd=news).stdout)
    assert len(runs["runs"]) == 5 and all("at" in r and isinstance(r["publishes"], list) for r in runs["runs"])
    (news / "s.csv").write_text("a@mydomain.example,A\nb@mydomain.example,B\n", encoding="utf-8")
    assert run("subscribers", "import", "s.csv", cwd=news).returncode == 0
    run("subscribers", "remove", "b@mydomain.example", cwd=news)
    counts = json.loads(run("subscribers", "count", "--format", "json", cwd=news).stdout)
    assert counts["active"] == 1 and counts["unsubscribed"] == 1 and counts["total"] == 2
    listed = json.loads(run("subscribers", "list", "--state", "all", "--format", "json", cwd=news).stdout)
    assert listed == [{"email": "a@mydomain.example", "name": "A", "tags": "", "state": "active"},
                      {"email": "b@mydomain.example", "name": "B", "tags": "", "state": "unsubscribed"}]
    sends = json.loads(run("subscribers", "sends", "2026-01-01", "--format", "json", cwd=news).stdout)
    assert sends == {"issue": "2026-01-01", "counts": {}, "recipients": []}


def test_verbose_logs_steps_to_stderr(news: Path) -> None:
    issue = next(iter((news / "issues").glob("*.md")))
    quiet = run("push", str(issue), "-c", "plaintext", "--dry-run", cwd=news)
    loud = run("-v", "push", str(issue), "-c", "plaintext", "--dry-run", cwd=news)
    assert "INFO" not in quiet.stderr
    assert "INFO publisher.config: config: " in loud.stderr and "INFO publisher.push: push " in loud.stderr


def test_shell_completion_as_documented(news: Path) -> None:
    script = run(cwd=news, env={"_PUBLISHER_COMPLETE": "bash_source"})
    assert script.returncode == 0 and "_publisher_completion" in script.stdout
    words = run(cwd=news, env={"_PUBLISHER_COMPLETE": "bash_complete", "COMP_WORDS": "publisher subs",
                               "COMP_CWORD": "1"})
    assert "subscribers" in words.stdout
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert '_PUBLISHER_COMPLETE=bash_source publisher' in readme


# ---- subscribers: export ⇄ import, delimiters, hints, formula injection --------------------


HOSTILE = [
    ("=cmd|' /C calc'!A0@mydomain.example", "=HYPERLINK(\"http://evil.example\")", "+1", "active"),
    ("-2@mydomain.example", "@SUM(A1)", "-tag", "active"),
    ("plain@mydomain.example", "'=already quoted", "\ttabbed", "active"),
    ("quote@mydomain.example", 'He said "hi", then left', "a,b", "unsubscribed"),
    ("cr@mydomain.example", "''+two quotes", "x", "bounced"),
    ("漢字@mydomain.example", "读者；分号", "", "active"),
]


def _seed(news: Path, rows) -> None:
    from publisher.stores.subscribers import SubscriberDB

    db = SubscriberDB(news / "subscribers.db")
    db.add_many([r[:3] for r in rows])
    for email, _, _, state in rows:
        if state != "active":
            db.set_state(email, state)


def test_export_escapes_formulas_and_import_takes_it_back_unchanged(news: Path, tmp_path: Path) -> None:
    rows = [r for r in HOSTILE if "|" not in r[0] and " " not in r[0]]  # (addresses the importer accepts)
    _seed(news, rows)
    exported = run("subscribers", "export", cwd=news)
    assert exported.returncode == 0, exported.stderr
    cells = list(csv.reader(exported.stdout.splitlines()))
    assert cells[0] == ["email", "name", "tags", "state"]
    for row in cells[1:]:
        for cell in row:  # OWASP: no cell a spreadsheet would run
            assert not cell or cell[0] not in "=+-@\t\r", row
    by_email = {r[0]: r for r in cells[1:]}
    assert by_email["'-2@mydomain.example"][1] == "'@SUM(A1)"
    assert by_email["plain@mydomain.example"][1] == "''=already quoted"
    # the same rows from `list` (no header) are escaped the same way
    listed = list(csv.reader(run("subscribers", "list", "--state", "all", cwd=news).stdout.splitlines()))
    assert listed == cells[1:]
    # into a fresh project: every row comes back exactly, states included
    other = tmp_path / "other"
    assert run(*INIT, "other", cwd=tmp_path).returncode == 0
    (other / "export.csv").write_text(exported.stdout, encoding="utf-8")
    imported = run("subscribers", "import", "export.csv", cwd=other)
    assert imported.returncode == 0, imported.stderr
    again = run("subscribers", "export", cwd=other).stdout
    assert again == exported.stdout
    from publisher.stores.subscribers import SubscriberDB

    got = {(s.email, s.name, s.tags, s.state) for s in SubscriberDB(other / "subscribers.db").iter(None)}
    assert got == set(rows)  # exactly, a leading tab included


def test_import_never_makes_an_exported_unsubscribe_active_again(news: Path) -> None:
    _seed(news, [("gone@mydomain.example", "G", "", "unsubscribed")])
    (news / "back.csv").write_text("email,name,tags,state\ngone@mydomain.example,G,,active\n", encoding="utf-8")
    assert run("subscribers", "import", "back.csv", cwd=news).returncode == 0
    assert "gone@mydomain.example,G,,unsubscribed" in run("subscribers", "list", "--state", "all", cwd=news).stdout
    # and an export that says unsubscribed stops mail to an address that is active here
    (news / "stop.csv").write_text("email,name,tags,state\nkeep@mydomain.example,K,,active\n"
                                   "keep@mydomain.example,K,,unsubscribed\n", encoding="utf-8")
    assert run("subscribers", "import", "stop.csv", cwd=news).returncode == 0
    assert json.loads(run("subscribers", "count", "--format", "json", cwd=news).stdout)["unsubscribed"] == 2


@pytest.mark.parametrize("sep", [";", "\t"])
def test_import_detects_the_delimiter(news: Path, sep: str) -> None:
    (news / "s.csv").write_text(f"email{sep}name{sep}tags\na@mydomain.example{sep}\"Doe, Jane\"{sep}vip\n"
                                f"b@mydomain.example{sep}Bob{sep}\n", encoding="utf-8")
    proc = run("subscribers", "import", "s.csv", cwd=news)
    assert proc.returncode == 0, proc.stderr
    assert "imported 2 row(s)" in proc.stdout
    assert "a@mydomain.example,\"Doe, Jane\",vip,active" in run("subscribers", "list", cwd=news).stdout


def test_a_bad_row_gets_its_line_and_a_hint(news: Path) -> None:
    (news / "s.csv").write_text("email,name\na@mydomain.example,A\nnot-an-address,B\n", encoding="utf-8")
    proc = run("subscribers", "import", "s.csv", cwd=news)
    assert proc.returncode == 1
    assert "s.csv:3: error: not an email address: 'not-an-address'" in proc.stderr
    assert "each line is email,name[,tags[,state]]" in proc.stderr and "separated by ','" in proc.stderr


def test_an_unclosed_quote_is_reported_where_it_opens(news: Path) -> None:
    (news / "s.csv").write_text('a@mydomain.example,A\n"b@mydomain.example,Bob\nc@mydomain.example,C\n'
                                'd@mydomain.example,D\ne@mydomain.example,E\n', encoding="utf-8")
    proc = run("subscribers", "import", "s.csv", cwd=news)
    assert proc.returncode == 1
    assert "s.csv:2: error: a quote opened on this line is not closed before line 5" in proc.stderr
    assert "imported 1 row(s)" in proc.stdout


def test_escape_cell_is_undone_exactly_by_unescape_cell() -> None:
    from publisher.subscribers import escape_cell, unescape_cell

    for value in ("=1+1", "+x", "-x", "@x", "\tx", "\rx", "'=x", "''@x", "plain", "'plain", "", "a=b"):
        escaped = escape_cell(value)
        assert not escaped or escaped[0] not in "=+-@\t\r"
        assert unescape_cell(escaped) == value


def test_list_output_imports_back_too(news: Path, tmp_path: Path) -> None:
    """`subscribers list` (no header, four columns) was refused by import: "4 columns"."""
    _seed(news, [("a@mydomain.example", "A, the first", "x", "active"), ("b@mydomain.example", "B", "", "bounced")])
    listed = run("subscribers", "list", "--state", "all", cwd=news).stdout
    other = tmp_path / "other"
    assert run(*INIT, "other", cwd=tmp_path).returncode == 0
    (other / "list.csv").write_text(listed, encoding="utf-8")
    proc = run("subscribers", "import", "list.csv", cwd=other)
    assert proc.returncode == 0 and "imported 2 row(s)" in proc.stdout, proc.stderr
    assert run("subscribers", "list", "--state", "all", cwd=other).stdout == listed


@pytest.mark.neutral
def test_the_example_owner_pushes_with_its_own_values_and_a_copy_does_not(tmp_path: Path) -> None:
    """The newsletter a shipped profile belongs to says so in its own config (`example_owner`, its
    name); a copy of the profile (which never carries the key) is still refused, and the key cannot
    claim another name."""
    profile = (EXAMPLES / "publisher.toml").read_text(encoding="utf-8")
    assert "\nexample_owner" not in profile  # the example file itself never claims it
    (tmp_path / "publisher.toml").write_text(profile, encoding="utf-8")
    with pytest.raises(ConfigError, match="is still the shipped example"):
        load_settings(cwd=tmp_path).require_own_identity()
    name = tomllib.loads(profile)["newsletter"]["name"]
    owned = profile.replace("[newsletter]\n", f'[newsletter]\nexample_owner = "{name}"\n', 1)
    (tmp_path / "publisher.toml").write_text(owned, encoding="utf-8")
    load_settings(cwd=tmp_path).require_own_identity()  # its own values: no error
    for wrong in ("Weekly Bits", "Newsletter"):
        other = owned.replace(f'name = "{name}"', f'name = "{wrong}"')
        (tmp_path / "publisher.toml").write_text(other, encoding="utf-8")
        with pytest.raises(ConfigError, match="example_owner"):
            load_settings(cwd=tmp_path).require_own_identity()


def test_an_email_image_with_no_public_url_is_an_error_not_a_broken_image(news: Path) -> None:
    """init points image_base_url at the web channel's per-issue folders, so the sample's local image
    has a public URL in email; emptied, `check` fails naming the key and push sends nothing."""
    issue = next(iter((news / "issues").glob("*.md")))
    date = issue.name[:10]
    html = run("render", str(issue), "-c", "email", cwd=news)
    assert html.returncode == 0, html.stderr
    assert f'src="https://news.mydomain.example/{date}/images/pipeline.png"' in html.stdout
    built = run("build", cwd=news)
    assert built.returncode == 0, built.stdout + built.stderr
    assert (news / "build" / "web" / date / "images" / "pipeline.png").is_file()  # where the URL points

    text = (news / "publisher.toml").read_text(encoding="utf-8")
    (news / "publisher.toml").write_text(text.replace('image_base_url = "https://news.mydomain.example/{date}"',
                                                      'image_base_url = ""'), encoding="utf-8")
    checked = run("check", "--offline", str(issue), cwd=news)
    assert checked.returncode == 1 and "images/pipeline.png" in checked.stdout + checked.stderr
    assert "[newsletter] image_base_url" in checked.stdout + checked.stderr
    pushed = run("push", str(issue), "-c", "email", "--dry-run", cwd=news,
                 env={"PUBLISHER_UNSUBSCRIBE_SECRET": "s" * 32})
    out = pushed.stdout + pushed.stderr
    assert pushed.returncode == 1 and "nothing was sent" in out and "Traceback" not in out, out
