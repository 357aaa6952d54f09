"""`publisher build`: each rendition re-rendered exactly when what it reads changes, and a
parallel build that gives the same bytes as a serial one.

Which renditions a build re-rendered is read off the manifest (each rendition's key changes exactly
when it is rendered again) and checked against the build's own count; which it wrote is read off
the output folder: a file is written (to a temporary file, then renamed: a new inode) only when its
bytes change, so the written renditions are always among the re-rendered ones — and equal to them
wherever the change shows in the output.
"""

from __future__ import annotations

import datetime as dt
import filecmp
import json
import re
from pathlib import Path

import pytest

from publisher.build import MANIFEST, build
from publisher.cli import main
from publisher.settings import load_settings
from tests.archive_support import make_archive, shifted
from tests.conftest import CORPUS, requires_shared

ISSUES = 14  # more than the 10 issues the 往期回顾 lists show
CALENDAR = {"github"}  # shows every issue up to its own
LISTS = {"zhihu", "aijishu", "plaintext"}  # show the last 10 before it
Pair = tuple[str, str]  # (issue date, channel)


@pytest.fixture(scope="module")
def corpus_work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("corpus")


@pytest.fixture
def site(tmp_path: Path, corpus_work: Path) -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"reference corpus not found at {CORPUS}")
    make_archive(CORPUS, tmp_path / "issues", ISSUES, work=corpus_work)
    (tmp_path / "publisher.toml").write_text('[paths]\nissues = "issues"\nout = "out"\n', encoding="utf-8")
    return tmp_path


def settings_of(site: Path):
    return load_settings(site / "publisher.toml")


def snapshot(out: Path) -> dict[Pair, tuple]:
    """(issue, channel) -> the names and inodes of that rendition's own files."""
    snap: dict[Pair, list] = {}
    for folder in sorted(p for p in out.iterdir() if p.is_dir()):
        for f in sorted(folder.iterdir()):
            m = re.match(r"(\d{4}-\d{2}-\d{2})\.", f.name)
            if m and f.is_file():
                snap.setdefault((m.group(1), folder.name), []).append((f.name, f.stat().st_ino))
    return {k: tuple(v) for k, v in snap.items()}


def manifest_keys(out: Path) -> dict[Pair, str]:
    """(issue, channel) -> the key the manifest records for that rendition."""
    path = out / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return {(k.split(".md/")[0], k.split(".md/")[1]): v["key"] for k, v in manifest.items()}


def rebuild(site: Path, **kw) -> tuple[set[Pair], dict]:
    """Build; return the renditions it re-rendered and the build's figures (and the renditions
    whose files it wrote)."""
    out = site / "out"
    before, keys_before = (snapshot(out), manifest_keys(out)) if out.is_dir() else ({}, {})
    rendered, fresh, errors = build(settings_of(site), out, **kw)
    assert errors == []
    after, keys_after = snapshot(out), manifest_keys(out)
    changed = {k for k, v in keys_after.items() if keys_before.get(k) != v}
    written = {k for k, v in after.items() if before.get(k) != v}
    assert rendered == len(changed)
    assert written <= changed  # nothing that was not re-rendered is ever rewritten
    assert set(after) == set(keys_after)  # every rendition in the manifest has its files
    return changed, {"fresh": fresh, "gone": set(before) - set(after), "written": written}


def dates(site: Path) -> list[str]:
    return sorted(p.stem for p in (site / "issues").glob("*.md"))


def affected_by(change: str, all_dates: list[str], channels: list[str]) -> set[Pair]:
    """The renditions whose archive slice an issue dated `change` appears in (or leaves)."""
    later = [d for d in all_dates if d > change]
    out = {(d, c) for d in later for c in channels if c in CALENDAR}
    out |= {(d, c) for d in later[:10] for c in channels if c in LISTS}
    return out


def every(date: str, channels: list[str]) -> set[Pair]:
    return {(date, c) for c in channels}


@requires_shared
def test_add_newest_issue_renders_only_it(site: Path) -> None:
    channels = settings_of(site).enabled_channels
    first, _ = rebuild(site, jobs=1)
    assert len(first) == ISSUES * len(channels)
    assert rebuild(site, jobs=1)[0] == set()  # no-op

    newest = dates(site)[-1]
    new = shifted(site / "issues" / f"{newest}.md", site / "issues", dt.timedelta(days=14))
    changed, figures = rebuild(site, jobs=1)
    assert figures["written"] == changed  # the change shows in each of them
    assert changed == every(new.stem, channels)
    assert figures["fresh"] == ISSUES * len(channels)


@requires_shared
def test_add_issue_in_the_past_renders_what_lists_it(site: Path) -> None:
    channels = settings_of(site).enabled_channels
    rebuild(site, jobs=1)
    all_dates = dates(site)
    backfill = shifted(site / "issues" / f"{all_dates[1]}.md", site / "issues", dt.timedelta(days=1))
    assert backfill.stem < all_dates[2]
    changed, figures = rebuild(site, jobs=1)
    assert figures["written"] == changed  # the change shows in each of them
    expected = every(backfill.stem, channels) | affected_by(backfill.stem, dates(site), channels)
    assert changed == expected
    # sanity of the expectation itself: every later github page, and exactly 10 lists per channel
    assert sum(1 for d, c in changed if c == "plaintext") == 11


@requires_shared
def test_edit_one_issue_renders_only_it(site: Path) -> None:
    channels = settings_of(site).enabled_channels
    rebuild(site, jobs=1)
    path = site / "issues" / f"{dates(site)[3]}.md"
    path.write_text(path.read_text(encoding="utf-8").replace("摘要：", "摘要：EDITED", 1), encoding="utf-8")
    changed, figures = rebuild(site, jobs=1)
    assert figures["written"] == changed  # the change shows in each of them
    assert changed == every(path.stem, channels)
    assert "EDITED" in (site / "out" / "plaintext" / f"{path.stem}.txt").read_text(encoding="utf-8")


@requires_shared
def test_delete_issue_removes_its_files_and_renders_what_listed_it(site: Path) -> None:
    toml = site / "publisher.toml"  # a QR target: the build generates the qr.png all issues share
    toml.write_text(toml.read_text(encoding="utf-8") + '\n[newsletter]\nqr_target = "https://example.org/follow"\n',
                    encoding="utf-8")
    channels = settings_of(site).enabled_channels
    rebuild(site, jobs=1)
    victim = dates(site)[5]
    (site / "issues" / f"{victim}.md").unlink()
    changed, figures = rebuild(site, jobs=1)
    assert figures["written"] == changed  # the change shows in each of them
    assert changed == affected_by(victim, dates(site), channels)
    assert figures["gone"] == every(victim, channels)
    assert not list((site / "out").glob(f"*/{victim}.*"))
    assert (site / "out" / "wechat" / "qr.png").is_file()  # shared by the other issues: kept
    manifest = json.loads((site / "out" / MANIFEST).read_text(encoding="utf-8"))
    assert not any(k.startswith(victim) for k in manifest)
    assert victim not in (site / "out" / "github" / f"{dates(site)[-1]}.md").read_text(encoding="utf-8")


@requires_shared
def test_rename_issue_is_a_delete_and_an_add(site: Path) -> None:
    channels = settings_of(site).enabled_channels
    rebuild(site, jobs=1)
    old = dates(site)[4]
    new = shifted(site / "issues" / f"{old}.md", site / "issues", dt.timedelta(days=3)).stem
    (site / "issues" / f"{old}.md").unlink()
    changed, figures = rebuild(site, jobs=1)
    assert figures["written"] == changed  # the change shows in each of them
    now = dates(site)
    expected = every(new, channels) | affected_by(old, now, channels) | affected_by(new, now, channels)
    assert changed == expected
    assert figures["gone"] == every(old, channels)


@requires_shared
@pytest.mark.parametrize(("table", "key", "value", "channel"), [
    ("github", "qr_path", "../qr-new.jpg", "github"),
    ("email", "from_name", "另一个名字", "email"),
    ("wechat", "title_template", "{title}!", "wechat"),
])
def test_config_of_one_channel_renders_only_it(site: Path, table: str, key: str, value: str, channel: str) -> None:
    channels = settings_of(site).enabled_channels
    rebuild(site, jobs=1)
    toml = site / "publisher.toml"
    toml.write_text(toml.read_text(encoding="utf-8") + f'\n[{table}]\n{key} = "{value}"\n', encoding="utf-8")
    changed, _ = rebuild(site, jobs=1)
    assert changed == {(d, channel) for d in dates(site)}
    assert channel in channels


@requires_shared
def test_newsletter_config_renders_every_channel(site: Path) -> None:
    channels = settings_of(site).enabled_channels
    rebuild(site, jobs=1)
    toml = site / "publisher.toml"
    toml.write_text(toml.read_text(encoding="utf-8") + '\n[newsletter]\neditor_url = "https://example.org/ed"\n',
                    encoding="utf-8")
    changed, _ = rebuild(site, jobs=1)
    assert changed == {(d, c) for d in dates(site) for c in channels}


@requires_shared
def test_template_override_renders_only_its_channel(site: Path) -> None:
    rebuild(site, jobs=1)
    tpl = site / "tpl" / "plaintext"
    tpl.mkdir(parents=True)
    (tpl / "footer.txt").write_text('{% extends "!builtin/plaintext/footer.txt" %}\n', encoding="utf-8")
    toml = site / "publisher.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace("[paths]\n", '[paths]\ntemplates = "tpl"\n'),
                    encoding="utf-8")
    changed, _ = rebuild(site, jobs=1)
    assert changed == {(d, "plaintext") for d in dates(site)}
    # then an edit of the override
    (tpl / "footer.txt").write_text("OVERRIDDEN FOOTER\n", encoding="utf-8")
    changed, figures = rebuild(site, jobs=1)
    assert figures["written"] == changed  # the change shows in each of them
    assert changed == {(d, "plaintext") for d in dates(site)}
    newest = dates(site)[-1]
    assert "OVERRIDDEN FOOTER" in (site / "out" / "plaintext" / f"{newest}.txt").read_text(encoding="utf-8")


@requires_shared
def test_tampered_manifest_never_deletes_outside_the_output_folder(site: Path) -> None:
    rebuild(site, jobs=1)
    outside = site / "precious.txt"
    outside.write_text("keep me", encoding="utf-8")
    manifest_path = site / "out" / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["1999-01-01.md/plaintext"] = {"key": "x", "files": [str(outside), "out/../precious.txt", "/etc/hostname"]}
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    changed, _ = rebuild(site, jobs=1)
    assert changed == set()
    assert outside.read_text(encoding="utf-8") == "keep me"
    assert "1999-01-01.md/plaintext" not in json.loads(manifest_path.read_text(encoding="utf-8"))


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@requires_shared
@pytest.mark.slow
def test_parallel_build_is_byte_identical_to_serial(tmp_path: Path, corpus_work: Path) -> None:
    """100 issues: the default (parallel) build, five times from scratch, never fails and writes
    the same files, byte for byte, as `-j 1` (the QR code all issues share included)."""
    make_archive(CORPUS, tmp_path / "issues", 100, work=corpus_work)
    (tmp_path / "publisher.toml").write_text('[paths]\nissues = "issues"\n', encoding="utf-8")
    settings = settings_of(tmp_path)
    serial = tmp_path / "serial"
    rendered, _, errors = build(settings, serial, jobs=1)
    assert errors == [] and rendered == 100 * len(settings.enabled_channels)
    reference = _tree(serial)
    manifest = (serial / MANIFEST).read_text(encoding="utf-8")
    for run in range(5):
        out = tmp_path / f"parallel{run}"
        rendered, _, errors = build(settings, out, jobs=None if run % 2 else 4)
        assert errors == [] and rendered == 100 * len(settings.enabled_channels)
        assert _tree(out) == reference
        match, mismatch, errs = filecmp.cmpfiles(serial, out, [f for f in reference if f != MANIFEST], shallow=False)
        assert mismatch == [] and errs == []
        assert (out / MANIFEST).read_text(encoding="utf-8") == manifest.replace(str(serial), str(out))


def test_build_progress_is_plain_lines_off_a_terminal(tmp_path: Path, capsys, monkeypatch) -> None:
    import shutil

    from tests.conftest import EXAMPLES

    shutil.copytree(EXAMPLES / "issues", tmp_path / "issues")
    (tmp_path / "publisher.toml").write_text('[paths]\nissues = "issues"\nout = "out"\n', encoding="utf-8")
    assert main(["--config", str(tmp_path / "publisher.toml"), "build", "-j", "2"]) == 0
    err = capsys.readouterr().err
    assert "rendered 2/2 issue(s)" in err and "built 12 rendition(s), 0 up to date, 0 failed" in err
    assert main(["--config", str(tmp_path / "publisher.toml"), "build"]) == 0
    assert "built 0 rendition(s), 12 up to date" in capsys.readouterr().err
