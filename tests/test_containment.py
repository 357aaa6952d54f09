"""Containment (issue 21 items 9 and 15), through the real command line.

- The root of every local file an issue names is the issues folder as configured: a symlinked
  issue file (`issues/X.md -> ../elsewhere/X.md`) does not move it, and only image files (by
  extension and by content) are ever copied into output. `check` reports it with file:line.
- `build --out` / `render --out` never write through a symlink inside the output folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from publisher.errors import SourceError
from publisher.reader import read_issue
from tests.hostile import source_with_image
from tests.test_cli import run

SECRET = b"SECRET_TOKEN=do-not-publish-4f1c"
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4"
       b"\x89\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x03\x00\x08\xfc\x02\xfe\xa7\x9a\xa0\xa0\x00\x00\x00\x00IEND"
       b"\xaeB`\x82")


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project whose issue file is a symlink into a folder that holds secrets."""
    monkeypatch.delenv("PUBLISHER_CONFIG", raising=False)
    proj = tmp_path / "proj"
    (proj / "issues").mkdir(parents=True)
    (proj / "publisher.toml").write_text('[paths]\nissues = "issues"\nout = "build"\n\n[web]\nbase_url = "https://example.org/n/"\n'
                                          '[newsletter]\nimage_base_url = "https://example.org/n/{date}"\n',
                                          encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "images").mkdir(parents=True)
    for name in (".env", "subscribers.db", "publisher.toml", "images/secret.png", "secret.png"):
        (elsewhere / name).write_bytes(SECRET)
    (elsewhere / "images" / "real.png").write_bytes(PNG)
    return proj, elsewhere


def _leaks(folder: Path) -> list[Path]:
    """Files holding the secret anywhere in the project but the issues folder (the source)."""
    return [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and SECRET in p.read_bytes()
            and not p.is_relative_to(folder / "issues")]


def _all_commands_refuse(proj: Path, needle: str) -> None:
    for args in (("check", "--offline", "issues/2026-11-23.md"),
                 ("render", "issues/2026-11-23.md", "--channel", "web", "--out", "r1"),
                 ("render", "issues/2026-11-23.md", "--channel", "github", "--out", "r2"),
                 ("build", "--out", "b")):
        proc = run(*args, cwd=proj)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 1, (args, out)
        assert "Traceback" not in out and needle in out, (args, out)
    assert _leaks(proj) == [], "a secret reached the output"


@pytest.mark.parametrize("ref", [".env", "subscribers.db", "publisher.toml", "images/secret.png", "secret.png"])
def test_a_symlinked_issue_file_does_not_move_the_containment_root(project, ref):
    proj, elsewhere = project
    (elsewhere / "2026-11-23.md").write_text(source_with_image(ref), encoding="utf-8")
    os.symlink("../../elsewhere/2026-11-23.md", proj / "issues" / "2026-11-23.md")
    # the reader: the root is issues/, so elsewhere/<ref> is not even looked at; a name that is
    # not an image's is refused by the reader with its line, a missing image by the render
    if not ref.endswith(".png"):
        with pytest.raises(SourceError) as err:
            read_issue(proj / "issues" / "2026-11-23.md")
        assert err.value.line == 11 and "not an image" in str(err.value)
        _all_commands_refuse(proj, "2026-11-23.md:11")
    else:
        _all_commands_refuse(proj, "2026-11-23.md:11")  # not found: issues/ holds no such image


@pytest.mark.parametrize("ref", [".env", "images/.env", "data.json", "notes.txt", "images/fake.png", "fake.PNG"])
def test_only_image_files_are_copied_into_output(project, ref):
    """Inside the issues folder too: a non-image (by name or by content) is refused at its line."""
    proj, _ = project
    issues = proj / "issues"
    (issues / "images").mkdir()
    (issues / Path(ref)).write_bytes(SECRET)
    (issues / "2026-11-23.md").write_text(source_with_image(ref), encoding="utf-8")
    _all_commands_refuse(proj, "2026-11-23.md:11")


@pytest.mark.parametrize("how", ["image", "folder", "dotdot", "absolute", "file-url", "encoded", "encoded-slash",
                                 "backslash", "cover"])
def test_every_way_out_of_the_issues_folder_is_refused_with_its_line(project, how):
    proj, elsewhere = project
    issues = proj / "issues"
    ref, cover, line = "images/link.png", None, 11
    if how == "image":
        (issues / "images").mkdir()
        os.symlink(elsewhere / "secret.png", issues / "images" / "link.png")
    elif how == "folder":
        os.symlink(elsewhere / "images", issues / "images")
        ref = "images/secret.png"
    elif how == "dotdot":
        ref = "../../elsewhere/secret.png"
    elif how == "absolute":
        ref = str(elsewhere / "secret.png")
    elif how == "file-url":
        ref = f"file://{elsewhere / 'secret.png'}"
    elif how == "encoded":
        ref = "%2e%2e/%2e%2e/elsewhere/secret.png"
    elif how == "encoded-slash":
        ref = "..%2f..%2felsewhere%2fsecret.png"
    elif how == "backslash":
        ref = "..\\..\\elsewhere\\secret.png"
    elif how == "cover":
        (issues / "images").mkdir()
        (issues / "images" / "ok.png").write_bytes(PNG)
        ref, cover, line = "images/ok.png", "../../elsewhere/secret.png", 3
    (issues / "2026-11-23.md").write_text(source_with_image(ref, cover=cover), encoding="utf-8")
    _all_commands_refuse(proj, f"2026-11-23.md:{line}")


def test_a_real_image_beside_a_symlinked_issue_is_published(project):
    """The rule is not a blanket refusal: an image in the issues folder is copied as before."""
    proj, elsewhere = project
    (proj / "issues" / "images").mkdir()
    (proj / "issues" / "images" / "real.png").write_bytes(PNG)
    (elsewhere / "2026-11-23.md").write_text(source_with_image("images/real.png"), encoding="utf-8")
    os.symlink("../../elsewhere/2026-11-23.md", proj / "issues" / "2026-11-23.md")
    assert run("check", "--offline", "issues/2026-11-23.md", cwd=proj).returncode == 0
    proc = run("build", "--out", "b", cwd=proj)
    assert proc.returncode == 0, proc.stderr
    copies = [p for p in (proj / "b").rglob("real.png")]
    assert copies and all(p.read_bytes() == PNG for p in copies)


# ---- item 15: no writing through a symlink inside the output folder ---------------------------------


@pytest.mark.parametrize("link", ["b/github", "b/email", "b/wechat/images", "b/github/2026-11-23.md",
                                  "b/github/images", "b/plaintext/images/real.png"])
def test_build_never_writes_through_a_symlink_in_the_output_folder(project, tmp_path, link):
    proj, _ = project
    (proj / "issues" / "images").mkdir()
    (proj / "issues" / "images" / "real.png").write_bytes(PNG)
    (proj / "issues" / "2026-11-23.md").write_text(source_with_image("images/real.png"), encoding="utf-8")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("untouched")
    path = proj / link
    path.parent.mkdir(parents=True, exist_ok=True)
    if link.endswith((".md", ".png")):
        os.symlink(victim / "keep.txt", path)
    else:
        os.symlink(victim, path)
    before = {p: p.read_bytes() for p in victim.rglob("*")}
    proc = run("build", "--out", "b", cwd=proj)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out, out
    assert "symbolic link" in out and str(path.relative_to(proj)) in out.replace(str(proj) + "/", ""), out
    assert {p: p.read_bytes() for p in victim.rglob("*")} == before, "a file outside the output folder changed"
    # removing the link is the recovery
    path.unlink()
    assert run("build", "--out", "b", cwd=proj).returncode == 0


def test_render_out_never_writes_through_a_symlink(project, tmp_path):
    proj, _ = project
    (proj / "issues" / "2026-11-23.md").write_text(source_with_image("images/real.png").replace(
        "![图](images/real.png)\n", ""), encoding="utf-8")
    victim = tmp_path / "victim"
    victim.mkdir()
    (proj / "r").mkdir()
    os.symlink(victim / "2026-11-23.md", proj / "r" / "2026-11-23.md")
    proc = run("render", "issues/2026-11-23.md", "--channel", "github", "--out", "r", cwd=proj)
    assert proc.returncode == 1 and "symbolic link" in proc.stderr, proc.stdout + proc.stderr
    assert list(victim.iterdir()) == []
