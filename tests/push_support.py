"""Helpers for the push, scheduler and git-transport tests: small issues written here (no
newsletter text), a bare git remote with a clone, and config tables appended to publisher.toml."""

from __future__ import annotations

import subprocess
from pathlib import Path

PNG = b"\x89PNG\r\n\x1a\n" + b"test-image"

ISSUE = """---
date: {date}
status: {status}
{extra}---

# 嵌入式AI简报 ({date})

> 导读：本次2条。测试用导读（{date}）。

## 业界新闻

- [测试新闻 {date} | 测试来源](https://example.org/news/{date})
摘要：第一条测试摘要。{image}

## 开源项目

- [example/repo: 测试项目 | 测试来源](https://example.org/repo/{date})
摘要：第二条测试摘要。
"""


def write_issue(folder: Path, date: str, *, status: str = "ready", publish_at: str | None = None,
                image: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if publish_at is None:  # scheduled at 08:00 on its date unless told otherwise ("" = none)
        publish_at = f"{date}T08:00:00+08:00"
    extra = f"publish_at: {publish_at}\n" if publish_at else ""
    img = ""
    if image:
        (folder / "img").mkdir(exist_ok=True)
        (folder / "img" / f"{date}.png").write_bytes(PNG)
        img = f"![示意图](img/{date}.png)"
    path = folder / f"{date}.md"
    path.write_text(ISSUE.format(date=date, status=status, extra=extra, image=img), encoding="utf-8")
    return path


def add_config(project: Path, text: str) -> None:
    with open(project / "publisher.toml", "a", encoding="utf-8") as f:
        f.write("\n" + text.strip() + "\n")


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stderr}"
    return proc.stdout.strip()


def make_remote(tmp: Path, readme: str = "# Archive\n\nHand-written introduction.\n") -> tuple[Path, Path]:
    """A bare repository (the remote) and a clone of it with one commit on master."""
    tmp.mkdir(parents=True, exist_ok=True)
    bare = tmp / "remote.git"
    clone = tmp / "archive"
    git(tmp, "init", "--quiet", "--bare", "-b", "master", str(bare))
    git(tmp, "clone", "--quiet", str(bare), str(clone))
    git(clone, "checkout", "--quiet", "-b", "master")
    git(clone, "config", "user.name", "Test Editor")
    git(clone, "config", "user.email", "editor@example.org")
    (clone / "README.md").write_text(readme, encoding="utf-8")
    git(clone, "add", "README.md")
    git(clone, "commit", "--quiet", "-m", "initial")
    git(clone, "push", "--quiet", "origin", "master")
    return bare, clone
