"""Golden files: the shipped examples rendered to every built-in channel, compared exactly.

A change that alters any output fails here, with a diff; when the change is on purpose, refresh the
files and review them like code:

    .venv/bin/python -m pytest tests/test_golden.py --update-goldens
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import pytest

from publisher.pipeline import context_for, load, render
from publisher.settings import load_settings
from tests.conftest import EXAMPLES, builtin_channels, neuraltalk_config

GOLDEN = Path(__file__).parent / "golden"
CHANNELS = builtin_channels()  # a third-party channel installed beside the project has no golden files
ISSUES = sorted((EXAMPLES / "issues").glob("*.md"))


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    root = tmp_path_factory.mktemp("golden")
    config = neuraltalk_config(root, {"paths": {"issues": str(EXAMPLES / "issues")},
                                      "channels": {"enabled": CHANNELS},
                                      "web": {"base_url": "https://example.org/newsletter/"}})
    return load_settings(config)


def _files(rendition) -> dict[str, str]:
    files = {rendition.filename: rendition.body, **dict(rendition.parts)}
    files["images.json"] = json.dumps(sorted(i.ref for i in rendition.images), ensure_ascii=False, indent=1) + "\n"
    if rendition.metadata:
        files["metadata.json"] = json.dumps(dict(rendition.metadata), ensure_ascii=False, indent=1,
                                            sort_keys=True, default=str) + "\n"
    return files


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("issue_path", ISSUES, ids=lambda p: p.stem)
def test_examples_match_their_golden_files(issue_path: Path, channel: str, settings, request) -> None:
    issue, _ = load(issue_path)
    rendition = render(issue, channel, settings, context_for(settings, issue))
    folder = GOLDEN / channel / issue.slug
    files = _files(rendition)
    if request.config.getoption("--update-goldens"):
        if folder.exists():
            for old in folder.rglob("*"):
                if old.is_file():
                    old.unlink()
        for name, text in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text, encoding="utf-8")
        return
    if not folder.is_dir():
        pytest.fail(f"no golden files in {folder}: run pytest tests/test_golden.py --update-goldens and review them")
    expected = {str(p.relative_to(folder)): p.read_text(encoding="utf-8") for p in folder.rglob("*") if p.is_file()}
    assert sorted(files) == sorted(expected), "the rendition's files differ from the golden ones"
    for name, text in files.items():
        if text != expected[name]:
            diff = "".join(difflib.unified_diff(expected[name].splitlines(True), text.splitlines(True),
                                                f"golden/{channel}/{issue.slug}/{name}", "rendered", n=2))
            pytest.fail(f"{channel} {issue.slug} {name} differs from its golden file "
                        f"(refresh with --update-goldens if on purpose):\n{diff[:6000]}")
