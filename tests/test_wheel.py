"""`pip install .` (not editable) gives a working `publisher`: templates and default config ship
inside the package. Installed with --target into a temp folder and run from elsewhere, so the
source tree cannot stand in for the installed package."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import EXAMPLES, ROOT


@pytest.mark.slow
def test_installed_package_builds_the_sample(tmp_path):
    target = tmp_path / "site"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(ROOT)],
        capture_output=True, text=True,
    )
    assert pip.returncode == 0, pip.stderr
    assert (target / "publisher" / "templates" / "github").is_dir()
    assert (target / "publisher" / "defaults" / "default.toml").is_file()
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(target), "PYTHONSAFEPATH": "1"}
    env.pop("PUBLISHER_CONFIG", None)
    code = (
        "import sys, publisher; assert publisher.__file__.startswith(sys.argv[1]), publisher.__file__;"
        "from publisher.cli import main; sys.exit(main(sys.argv[2:]))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(target), "--config", str(EXAMPLES / "publisher.toml"), "build",
         "--out", str(out), "--force"],
        capture_output=True, text=True, cwd=tmp_path, env=env,
    )
    assert run.returncode == 0, run.stderr
    for channel, suffix in [("github", ".md"), ("wechat", ".html"), ("email", ".html"), ("zhihu", ".md"),
                            ("aijishu", ".md"), ("plaintext", ".txt")]:
        assert (out / channel / f"2026-11-23{suffix}").is_file(), run.stdout
