"""The import graph, read from the source (AST), at every depth — a function-level import is an
import too; only those under `if TYPE_CHECKING:` are left out (they never run).

- no import cycles between the program's modules;
- nothing outside publisher/cli/ imports click or rich (the CLI is the thin top layer);
- channels/ never imports a transport or a store (a channel renders; it does not publish).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from tests.conftest import ROOT

# the source folders and the package each one is installed as (setup.py's MAPPED)
SOURCES = {"publisher": ROOT / "publisher", "publisher.channels": ROOT / "channels"}
CLI = "publisher.cli"
UI_LIBRARIES = ("click", "rich")
# what a channel must not import: the transports and every store of state (ledger, subscribers,
# bounces' events, link cache, the WeChat API's tokens)
STORES = ("publisher.transports", "publisher.ledger", "publisher.stores", "publisher.subscribers",
          "publisher.bounces", "publisher.linkcheck", "publisher.wechat_api", "publisher.push",
          "publisher.scheduler")


@cache
def modules() -> dict[str, Path]:
    """Every module of the program: dotted name -> file."""
    found = {}
    for package, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if "__pycache__" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    # channels/ is a subpackage of publisher: its modules are found under their installed name once
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every Import/ImportFrom node, at any depth, except under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _known(name: str) -> str | None:
    """The deepest program module `name` is, or is inside."""
    while name:
        if name in modules():
            return name
        name = name.rpartition(".")[0]
    return None


@cache
def imported_names(name: str) -> frozenset[str]:
    """Every dotted name module `name` imports (absolute; `from m import x` gives m.x and m)."""
    path = modules()[name]
    out: set[str] = set()
    for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
            continue
        if node.level:
            base = _package_of(name, path)
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = f"{base}.{node.module}" if node.module else base
        else:
            target = node.module or ""
        out.add(target)
        out.update(f"{target}.{alias.name}" for alias in node.names)
    return frozenset(out)


def edges(name: str) -> set[str]:
    """The program modules `name` imports."""
    out = set()
    for imported in imported_names(name):
        target = _known(imported)
        if target is not None and target != name:
            out.add(target)
    return out


def cycles() -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges(v)):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(modules()):
        if v not in index:
            visit(v)
    return found


def _inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


# ---- the graph is read right ----------------------------------------------------------------


def test_the_walk_sees_every_kind_of_import(tmp_path: Path) -> None:
    """A deep import (in a function, a try, a class) counts; one under TYPE_CHECKING does not;
    relative imports resolve against the module's package."""
    tree = ast.parse(
        "import os\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import click\n"
        "else:\n    import json\n"
        "def f():\n    try:\n        from rich.table import Table\n    except ImportError:\n        pass\n"
        "class C:\n    def g(self):\n        import yaml\n")
    names = {a.name for n in _imports(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in _imports(tree) if isinstance(n, ast.ImportFrom)}
    assert names == {"os", "typing", "json", "rich.table", "yaml"}
    # real modules: a lazy import inside a function is an edge; `from . import x` names x
    assert "publisher.channels.base" in edges("publisher.pipeline")
    assert "publisher.channels.base" in edges("publisher.transports")  # inside get_transport()
    assert "publisher.transports.base" in edges("publisher.transports.git")  # from .base import …
    assert "publisher.cli" in edges("publisher.cli.build")
    assert {"publisher.cli", "publisher.channels", "publisher.transports.git"} <= set(modules())


def test_a_cycle_is_found(monkeypatch) -> None:
    """The cycle finder on a graph with a known cycle (a -> b -> c -> a) and a tail (c -> d)."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    monkeypatch.setattr(__import__(__name__, fromlist=["x"]), "modules", lambda: dict.fromkeys(graph))
    monkeypatch.setattr(__import__(__name__, fromlist=["x"]), "edges", lambda v: graph[v])
    assert cycles() == [["a", "b", "c"]]


# ---- the rules --------------------------------------------------------------------------------


def test_no_import_cycles() -> None:
    assert cycles() == []


def test_only_the_cli_imports_click_or_rich() -> None:
    offenders = sorted(
        f"{name} imports {imported}"
        for name in modules() if not _inside(name, CLI)
        for imported in imported_names(name)
        if imported.split(".")[0] in UI_LIBRARIES)
    assert offenders == []
    # and the CLI does: the rule is about something real
    assert any(i.split(".")[0] == "click" for i in imported_names("publisher.cli"))


def test_channels_never_import_transports_or_stores() -> None:
    offenders = sorted(
        f"{name} imports {imported}"
        for name in modules() if _inside(name, "publisher.channels")
        for imported in imported_names(name)
        if any(_inside(imported, s) for s in STORES))
    assert offenders == []


def test_every_command_lives_in_the_cli() -> None:
    """No click command is defined outside publisher/cli/ (they were spread over 8 modules)."""
    from publisher.cli import LAZY_COMMANDS

    assert all(target.startswith(CLI + ".") for target in LAZY_COMMANDS.values())
    assert not (ROOT / "publisher" / "commands").exists()


def test_the_domain_runs_without_click_or_rich(tmp_path: Path) -> None:
    """Not only the imports at the top: build, check and push really run with click and rich
    impossible to import (a lazy import inside a function would fail here)."""
    import os
    import subprocess
    import sys

    from tests.conftest import EXAMPLES

    (tmp_path / "publisher.toml").write_text(
        f'[paths]\nissues = "{(EXAMPLES / "issues").as_posix()}"\nout = "out"\nledger = "l.db"\n'
        '[outbox]\npath = "outbox"\n[channels]\nenabled = ["github", "email", "wechat", "plaintext"]\n',
        encoding="utf-8")
    script = (
        "import sys\n"
        "sys.modules['click'] = sys.modules['rich'] = None  # any import of them raises ImportError\n"
        "from pathlib import Path\n"
        "from publisher.settings import load_settings\n"
        "from publisher.build import build\n"
        "from publisher.check import run_check\n"
        "from publisher.push import push_issue, status_rows\n"
        "s = load_settings(Path('publisher.toml'))\n"
        "seen = []\n"
        "rendered, fresh, errors = build(s, Path('out'), jobs=1, progress=lambda d, t: seen.append(d))\n"
        "assert rendered and not errors and seen[-1] == 2, (rendered, errors, seen)\n"
        "files, findings, _ = run_check(s.issue_files(), s, offline=True)\n"
        "report = push_issue(s, s.issue_files()[-1], ['plaintext'])\n"
        "assert report.ok, report.outcomes\n"
        "assert status_rows(s)[2][0]['state'] == 'done'\n"
        "print('ok', len(files))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PUBLISHER_CONFIG", None)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("ok 2")
