"""Shared fixtures. Tests that read ../shared skip with a reason when it is absent."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("PUBLISHER_SHARED", ROOT.parent / "shared"))
CORPUS = SHARED / "corpus"
SEEDS = SHARED / "seeds"
ORACLE = SHARED / "tools" / "oracle.py"
# The NeuralTalk newsletter's example profile (its publisher.toml and sample issues)
EXAMPLES = ROOT / "examples" / "neuraltalk"
# The profile's tables that are the newsletter's identity (its other tables are the demo's paths)
PROFILE_TABLES = ("newsletter", "github", "email")

# Debian's Chromium, driven by Playwright (its own browser download is not used)
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]

def builtin_channels() -> list[str]:
    """The channels this project's own distribution registers (pyproject's entry points), so the
    suite holds the same whatever third-party channels are installed beside it."""
    from importlib.metadata import entry_points

    return sorted(ep.name for ep in entry_points(group="publisher.channels")
                  if ep.dist is not None and ep.dist.name == "publisher")


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


def neuraltalk_identity() -> dict:
    """The identity tables of the NeuralTalk profile (without its paths)."""
    profile = tomllib.loads((EXAMPLES / "publisher.toml").read_text(encoding="utf-8"))
    return {t: {k: v for k, v in profile.get(t, {}).items() if k not in ("subscribers_db",)}
            for t in PROFILE_TABLES}


def neuraltalk_config(folder: Path, tables: dict | None = None) -> Path:
    """folder/publisher.toml: the NeuralTalk profile's identity and `tables` (which win)."""
    data = neuraltalk_identity()
    for table, values in (tables or {}).items():
        data.setdefault(table, {}).update(values)
    path = folder / "publisher.toml"
    path.write_text(toml_dump(data), encoding="utf-8")
    return path


def neuraltalk_defaults_text() -> str:
    """The core's built-in defaults with the NeuralTalk profile's identity laid over them, as TOML."""
    from publisher.settings import _default_text

    data = tomllib.loads(_default_text())
    for table, values in neuraltalk_identity().items():
        if table in data:
            data[table].update(values)
    return toml_dump(data)


def neuraltalk_channel_configs() -> dict[type, str]:
    """Channel class -> its `config` with the NeuralTalk profile's identity laid over its tables."""
    from publisher.registry import available_channels, load_channel

    out = {}
    for name in available_channels():
        cls = load_channel(name)
        tables = cls.config_tables()
        mine = {t: v for t, v in neuraltalk_identity().items() if t in tables}
        if mine:
            for table, values in mine.items():
                tables[table].update(values)
            out[cls] = toml_dump(tables)
    return out


def toml_dump(data: dict) -> str:
    """TOML for tables of strings, numbers, booleans and lists (what publisher.toml holds)."""
    import json

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, (int, float)):
            return repr(v)
        return json.dumps(v, ensure_ascii=False)

    return "".join(f"[{t}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in table.items()) + "\n"
                   for t, table in data.items())


@pytest.fixture(scope="session", autouse=True)
def neuraltalk_base():
    """In-process tests run as the NeuralTalk newsletter itself: its profile's identity is laid
    over the neutral built-in defaults (the archive's real issues are its), and its values are its
    own, not another newsletter's borrowed example (only the defaults' example.org placeholders are
    refused). For the whole session, so module-scoped fixtures see it too; `@pytest.mark.neutral`
    runs a test with the shipped defaults and guard as a user gets them. Subprocesses always run
    the shipped defaults."""
    import publisher.settings as settings_module

    real_text, real_shipped = settings_module._default_text, settings_module.shipped_examples
    text = neuraltalk_defaults_text()
    configs = neuraltalk_channel_configs()
    real_configs = {cls: cls.config for cls in configs}
    shipped = {key: {value} - {""} for key, value in settings_module.identity_defaults().items()}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(settings_module, "_default_text", lambda: text)
        mp.setattr(settings_module, "shipped_examples", lambda: shipped)
        for cls, config in configs.items():
            mp.setattr(cls, "config", config)
        yield real_text, real_shipped, real_configs


@pytest.fixture(autouse=True)
def neutral_defaults(request, neuraltalk_base, monkeypatch):
    if request.node.get_closest_marker("neutral"):
        import publisher.settings as settings_module

        real_text, real_shipped, real_configs = neuraltalk_base
        monkeypatch.setattr(settings_module, "_default_text", real_text)
        monkeypatch.setattr(settings_module, "shipped_examples", real_shipped)
        for cls, config in real_configs.items():
            monkeypatch.setattr(cls, "config", config)


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
