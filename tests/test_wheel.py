"""The non-editable install works: the wheel is built, installed into a fresh virtual environment
(with its dependencies, as a user gets them), and every command runs from another directory, so the
source tree cannot stand in for the installed package."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, ROOT


def _run(args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the built wheel installed; returns its bin/ folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    built = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(ROOT)])
    assert built.returncode == 0, built.stderr
    wheels = list(dist.glob("publisher-*.whl"))
    assert len(wheels) == 1, wheels
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    pip = _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", str(wheels[0])])
    if pip.returncode != 0 and "Could not find a version" in pip.stderr + pip.stdout:
        pytest.skip(f"dependencies cannot be installed from the package index here: {pip.stderr[-300:]}")
    assert pip.returncode == 0, pip.stderr
    return bin_dir


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PUBLISHER_CONFIG", "PYTHONPATH")}
    env["PYTHONSAFEPATH"] = "1"
    return env


def _subcommands(help_text: str) -> list[str]:
    section = help_text.split("Commands:", 1)[1]
    return [m.group(1) for m in re.finditer(r"^\s{2}(\S+)", section, re.M)]


@pytest.mark.slow
def test_every_command_of_the_installed_package_runs(installed: Path, tmp_path: Path) -> None:
    exe = str(installed / "publisher")
    top = _run([exe, "--help"], cwd=tmp_path, env=_env())
    assert top.returncode == 0, top.stderr
    commands = _subcommands(top.stdout)
    for expected in ["build", "check", "import", "preview", "push", "render", "schedule", "serve", "status",
                     "subscribers"]:
        assert expected in commands, top.stdout
    for name in commands:
        sub = _run([exe, name, "--help"], cwd=tmp_path, env=_env())
        assert sub.returncode == 0, f"publisher {name} --help: {sub.stderr[-800:]}"
        assert "Usage:" in sub.stdout and "Traceback" not in sub.stderr
    as_module = _run([str(installed / "python"), "-m", "publisher", "--help"], cwd=tmp_path, env=_env())
    assert as_module.returncode == 0, as_module.stderr
    assert as_module.stdout == top.stdout


@pytest.mark.slow
def test_installed_package_renders_and_builds_the_example_from_elsewhere(installed: Path, tmp_path: Path) -> None:
    exe = str(installed / "publisher")
    where = _run([str(installed / "python"), "-c", "import publisher; print(publisher.__file__)"],
                 cwd=tmp_path, env=_env())
    assert str(installed.parent) in where.stdout, "the test must run the installed package, not the source tree"
    config = str(EXAMPLES / "publisher.toml")
    render = _run([exe, "--config", config, "render", str(EXAMPLES / "issues" / "2026-11-23.md"),
                   "--channel", "github"], cwd=tmp_path, env=_env())
    assert render.returncode == 0, render.stderr
    assert render.stdout.startswith("---\nlayout: default")
    out = tmp_path / "out"
    build = _run([exe, "--config", config, "build", "--out", str(out), "--force"], cwd=tmp_path, env=_env())
    assert build.returncode == 0, build.stderr
    for channel, suffix in [("github", ".md"), ("wechat", ".html"), ("email", ".html"), ("zhihu", ".md"),
                            ("aijishu", ".md"), ("plaintext", ".txt")]:
        assert (out / channel / f"2026-11-23{suffix}").is_file(), build.stdout


@pytest.mark.slow
def test_installed_package_ships_the_program_pages(installed: Path, tmp_path: Path) -> None:
    """The preview page, its CSS and JS, the unsubscribe pages and the archive calendar are
    template files (templates/preview/, serve/, github/index.md): the wheel must carry them."""
    (tmp_path / "publisher.toml").write_text(
        f'[paths]\nissues = "{(EXAMPLES / "issues").as_posix()}"\nout = "out"\n', encoding="utf-8")
    preview = _run([str(installed / "publisher"), "preview", "--no-open", "-c", "plaintext"], cwd=tmp_path,
                   env=_env())
    assert preview.returncode == 0, preview.stderr
    page = Path(preview.stdout.strip()).read_text(encoding="utf-8")
    assert "nav.tabs button.on" in page and "new EventSource(" in page  # the CSS and the script, inlined
    check = ("import datetime as dt\n"
             "from publisher.channels.base import builtin_env\n"
             "from publisher.transports.git import index_block\n"
             "print(index_block([(dt.date(2026, 11, 23), '2026-11-23.md')], 'X', channel='github'))\n"
             "print(builtin_env().get_template('serve/unsubscribe.html').render(page='invalid', name='n'))\n")
    shipped = _run([str(installed / "python"), "-c", check], cwd=tmp_path, env=_env())
    assert shipped.returncode == 0, shipped.stderr
    assert "共 1 期X。" in shipped.stdout and "| 2026 |" in shipped.stdout and "[23](2026-11-23.md)" in shipped.stdout
    assert "<title>链接无效</title>" in shipped.stdout
