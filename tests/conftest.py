"""Shared fixtures. Tests that read ../shared skip with a reason when it is absent."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("PUBLISHER_SHARED", ROOT.parent / "shared"))
CORPUS = SHARED / "corpus"
SEEDS = SHARED / "seeds"
ORACLE = SHARED / "tools" / "oracle.py"
EXAMPLES = ROOT / "examples"

# Debian's Chromium, driven by Playwright (its own browser download is not used)
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]

requires_shared = pytest.mark.skipif(
    not CORPUS.is_dir(), reason=f"reference material not found at {SHARED} (clone the project beside shared/)"
)


def corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*.md")) if CORPUS.is_dir() else []


def seed(prefix: str) -> Path:
    matches = sorted(SEEDS.glob(f"{prefix}_*.txt"))
    if not matches:
        pytest.skip(f"seed {prefix} not found in {SEEDS}")
    return matches[0]


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module; skips with a reason where it cannot run."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium to run the browser tests")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def corpus_dir() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"reference corpus not found at {CORPUS}")
    return CORPUS


@pytest.fixture(scope="session")
def imported_corpus(tmp_path_factory) -> Path:
    """The whole corpus imported as canonical sources (an issues folder)."""
    if not CORPUS.is_dir():
        pytest.skip(f"reference corpus not found at {CORPUS}")
    from publisher.legacy import import_file

    out = tmp_path_factory.mktemp("issues")
    for path in corpus_files():
        import_file(path, out)
    return out


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """An empty project folder with a publisher.toml pointing at its own issues/ and ledger."""
    (tmp_path / "issues").mkdir()
    (tmp_path / "publisher.toml").write_text(
        '[paths]\nissues = "issues"\nout = "build"\nledger = "publisher.db"\n', encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PUBLISHER_CONFIG", raising=False)
    return tmp_path


def pytest_addoption(parser) -> None:
    parser.addoption("--update-goldens", action="store_true", default=False,
                     help="rewrite tests/golden/ from the current renderings (review the diff like code)")


@pytest.fixture(scope="session")
def pg_cluster():
    """One throw-away PostgreSQL cluster for the whole session (tests/pg_support.py). Skips with a
    reason where it cannot be started — except in CI (CI=true), where that is a failure."""
    from tests.pg_support import PgCluster, PgUnavailable

    try:
        cluster = PgCluster()
    except (PgUnavailable, OSError, subprocess.SubprocessError) as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL could not be started in CI: {exc}")
        pytest.skip(f"PostgreSQL could not be started: {exc}")
    yield cluster
    cluster.destroy()


@pytest.fixture
def pg_url(pg_cluster) -> str:
    """A new empty PostgreSQL database for this test."""
    return pg_cluster.create_db()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request) -> str:
    """Run the test on both backends: '' (SQLite files) or the URL of an empty PostgreSQL database."""
    if request.param == "sqlite":
        return ""
    return request.getfixturevalue("pg_url")
