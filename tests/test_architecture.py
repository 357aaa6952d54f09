"""The shape of the program, read from the source (AST) and from docs/architecture.md.

An import is an import at any depth (a function-level import too) and when a module is named in
a string (`importlib.import_module("…")`, `__import__("…")`, a `"package.module:Name"` reference);
only imports under `if TYPE_CHECKING:` are left out (they never run).

- the layer table of docs/architecture.md, with its listed crossings and nothing else;
- no import cycles between the program's modules;
- nothing outside publisher/cli/ imports click or rich (the CLI is the thin top layer);
- a channel's rendering modules reach no store, transport or I/O library, even through others;
- no module outside channels/<name>/ names a channel (an import, a table, a comparison, a key).

Each rule is also run on a deliberate violation, and must catch it.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import ROOT

# the source folders and the package each one is installed as (setup.py's MAPPED)
SOURCES = {"publisher": ROOT / "publisher", "publisher.channels": ROOT / "channels"}
CLI = "publisher.cli"
UI_LIBRARIES = ("click", "rich")
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
    return frozenset(out | named_in_strings(name))


DYNAMIC = ("import_module", "__import__")


def named_in_strings(name: str) -> frozenset[str]:
    """The modules module `name` imports by a literal string: `importlib.import_module("…")`,
    `__import__("…")`. (A channel's `transport = "module:Name"` is a declaration the registry
    loads for `push`, not an import of the channel's: its transport stays out of rendering.)"""
    path = modules()[name]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in DYNAMIC and isinstance(node.args[0].value, str):
                out.add(node.args[0].value)
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


# ---- the rules, as functions (run on the program, and on deliberate violations) ---------------

DOC = ROOT / "docs" / "architecture.md"
IO_LIBRARIES = ("socket", "sqlite3", "requests", "urllib.request", "urllib3", "http.client", "http.server",
                "smtplib", "imaplib", "poplib", "ftplib", "subprocess", "sqlalchemy", "psycopg", "psycopg2",
                "aiosmtpd", "waitress", "watchfiles", "webbrowser", "multiprocessing")


def _table(heading: str) -> list[list[str]]:
    """The rows (cells) of the first Markdown table after `heading` in docs/architecture.md."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index(heading)
    rows = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not set("".join(cells)) <= set("- "):
                rows.append(cells)
        elif rows:
            break
    return rows[1:]  # the header row aside


def _ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


@cache
def layers() -> list[tuple[str, list[str], frozenset[str]]]:
    """(layer, module patterns, layers it may import) from the doc's layer table, top first."""
    return [(cells[0], _ticked(cells[1]), frozenset(_ticked(cells[2]))) for cells in _table("## The layers")]


def layer_of(module: str) -> str | None:
    for name, patterns, _ in layers():
        if any(fnmatch.fnmatchcase(module, p) for p in patterns):
            return name
    return None


def crossings_allowed() -> set[tuple[str, str]]:
    return {(_ticked(c[0])[0], _ticked(c[1])[0]) for c in _table("### Known crossings")}


def layer_offenders() -> set[str]:
    """Every import from a layer into one its row does not name (and every unplaced module)."""
    allowed = {name: may | {name} for name, _, may in layers()}
    out = set()
    for name in modules():
        mine = layer_of(name)
        if mine is None:
            out.add(f"{name} is in no layer of docs/architecture.md")
            continue
        for target in edges(name):
            theirs = layer_of(target)
            if theirs not in allowed[mine]:
                out.add(f"{name} ({mine}) imports {target} ({theirs})")
    return out


def ui_offenders() -> list[str]:
    return sorted(f"{name} imports {imported}" for name in modules() if not _inside(name, CLI)
                  for imported in imported_names(name) if imported.split(".")[0] in UI_LIBRARIES)


def reach(name: str) -> set[str]:
    """The program modules `name` imports, directly or through others."""
    seen, stack = set(), [name]
    while stack:
        for target in edges(stack.pop()):
            if target not in seen:
                seen.add(target)
                stack.append(target)
    return seen


def io_offenders() -> list[str]:
    """A channel's rendering module (the channels layer) reaching I/O: a store, a transport, an
    I/O library — itself or through any module it imports."""
    out = []
    for name in modules():
        if layer_of(name) != "channels":
            continue
        for mod in {name} | reach(name):
            if layer_of(mod) == "transports" or _inside(mod, "publisher.stores"):
                out.append(f"{name} reaches {mod}")
            for imported in imported_names(mod):
                if any(_inside(imported, lib) for lib in IO_LIBRARIES):
                    out.append(f"{name} reaches {imported}" + (f" (through {mod})" if mod != name else ""))
    return sorted(set(out))


def channel_names() -> list[str]:
    return sorted({p.parent.name for p in (ROOT / "channels").glob("*/__init__.py")})


WORD_TABLE = "### Where a channel's name is another word"


def named_allowed() -> set[tuple[str, str]]:
    """(module, expression): the exact expressions in which a channel's name is another word (the
    `email` column of a row, a form field), from the doc's table — anything else in that module
    that names the channel is still caught."""
    return {(_ticked(c[0])[0], e) for c in _table(WORD_TABLE) for e in _ticked(c[1])}


def _docstrings(tree: ast.AST) -> set[int]:
    """Nodes not read on their own: docstrings, and a tuple, list or set compared against (the
    comparison is the expression reported)."""
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return docs | {id(c) for node in ast.walk(tree) if isinstance(node, ast.Compare) for c in node.comparators}


def _names_in(node: ast.AST, names: set[str], table: re.Pattern) -> list[str]:
    """Channel names `node` uses as a selector: compared, a subscript, a dict key, a call argument,
    an element of a tuple, list or set (a `("email", "from_address")` key, a dict keyed by such
    tuples), or a config table `[name]` inside a string."""
    def consts(nodes):
        return [n.value for n in nodes if isinstance(n, ast.Constant) and n.value in names]

    if isinstance(node, ast.Compare):
        found = consts([node.left, *node.comparators])
        for c in node.comparators:
            if isinstance(c, ast.Tuple | ast.List | ast.Set):
                found += consts(c.elts)
        return found
    if isinstance(node, ast.Subscript):
        return consts([node.slice])
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return consts(node.elts)
    if isinstance(node, ast.Dict):
        return consts([k for k in node.keys if k is not None])
    if isinstance(node, ast.Call):
        return consts(node.args)
    if isinstance(node, ast.ImportFrom | ast.Import):
        mods = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
        return [m.split(".")[2] for m in mods if m.startswith("publisher.channels.") and m.split(".")[2] in names]
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return table.findall(node.value)
    return []


def name_uses() -> set[tuple[str, int | str, str, str]]:
    """(module, line, channel, expression) of every channel name outside its own folder (the
    shared modules of channels/ included)."""
    names = set(channel_names())
    table = re.compile(r"\[(" + "|".join(sorted(names)) + r")\]")
    out = set()
    for module, path in modules().items():
        parts = module.split(".")
        own = parts[2] if len(parts) > 2 and parts[1] == "channels" and parts[2] in names else None
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, str(path))
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            for found in _names_in(node, names, table):
                if found != own:
                    expr = " ".join((ast.get_source_segment(source, node) or "").split())
                    out.add((module, getattr(node, "lineno", "?"), found, expr))
    return out


def name_offenders() -> set[str]:
    """A channel named outside its own folder, but for the expressions the doc lists."""
    allowed = named_allowed()
    return {f"{module}:{line} names the {found} channel: {expr}" for module, line, found, expr in name_uses()
            if (module, expr) not in allowed}


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
    assert ui_offenders() == []
    # and the CLI does: the rule is about something real
    assert any(i.split(".")[0] == "click" for i in imported_names("publisher.cli"))


def test_the_layer_table_of_the_docs_holds() -> None:
    assert [name for name, _, _ in layers()] == ["cli", "operations", "transports", "pipeline", "channels",
                                                  "source", "ground"]
    assert layer_offenders() == {f"{m} ({layer_of(m)}) imports {t} ({layer_of(t)})" for m, t in crossings_allowed()}
    # every listed crossing still crosses: the list only shrinks
    for module, target in crossings_allowed():
        assert target in edges(module), f"{module} no longer imports {target}: drop its row from the docs"


def test_channel_rendering_reaches_no_io() -> None:
    assert io_offenders() == []


def test_no_module_names_a_channel_outside_its_folder() -> None:
    assert {"email", "github", "telegram", "wechat", "web", "zhihu", "aijishu", "plaintext"} <= set(channel_names())
    assert sorted(name_offenders()) == []
    used = {(module, expr) for module, _, _, expr in name_uses()}
    for row in named_allowed():  # an exception still needed, or its row goes
        assert row in used, f"{row} no longer names a channel: drop it from the docs"
    assert named_allowed(), "the table is read"


# ---- each rule fails on a deliberate violation -----------------------------------------------

VIOLATIONS = {
    # module name -> (source, the rule's function, the words its report must hold)
    "cycle through importlib": ("publisher.model", "import importlib\nimportlib.import_module('publisher.pipeline')\n",
                                "cycles", "publisher.pipeline"),
    "cycle through __import__": ("publisher.refs", "__import__('publisher.push')\n", "cycles", "publisher.push"),
    "a store importing a channel": ("publisher.stores.evil", "from publisher.channels.email import EmailChannel\n",
                                    "layer_offenders", "publisher.stores.evil (ground) imports publisher.channels.email"),
    "a channel importing pipeline": ("publisher.channels.zhihu.evil", "def f():\n    from publisher import pipeline\n",
                                     "layer_offenders", "imports publisher.pipeline (pipeline)"),
    "a channel importing mailmsg": ("publisher.channels.github.evil", "import publisher.mailmsg\n",
                                    "io_offenders", "reaches publisher.mailmsg"),
    "a channel importing requests": ("publisher.channels.web.evil", "import requests\n", "io_offenders",
                                     "reaches requests"),
    "a channel importing sqlite3": ("publisher.channels.zhihu.evil", "import sqlite3\n", "io_offenders",
                                    "reaches sqlite3"),
    "a channel importing socket lazily": ("publisher.channels.email.evil", "def f():\n    import socket\n",
                                          "io_offenders", "reaches socket"),
    "a channel reaching I/O through a helper": ("publisher.channels.zhihu.evil", "from publisher.stores import ledger\n",
                                                 "io_offenders", "reaches publisher.stores"),
    "a channel name as a string in core": ("publisher.evil", "def f(s):\n    return s['wechat']\n",
                                           "name_offenders", "publisher.evil:2 names the wechat channel"),
    "a channel's key as a tuple in core": ("publisher.settings", "KEYS = {('github', 'repo_path')}\n",
                                           "name_offenders", "names the github channel: ('github', 'repo_path')"),
    "a dict keyed by a channel's key": ("publisher.evil", "K = {('email', 'list_id'): None}\n", "name_offenders",
                                        "names the email channel: ('email', 'list_id')"),
    "a list of channels in core": ("publisher.scaffold", "X = ['wechat', 'zhihu']\n", "name_offenders",
                                   "names the wechat channel: ['wechat', 'zhihu']"),
    "a channel compared by name": ("publisher.evil", "def f(c):\n    return c == 'zhihu'\n", "name_offenders",
                                   "names the zhihu channel"),
    "a channel's table in a message": ("publisher.evil", "X = 'set [telegram] chat_id'\n", "name_offenders",
                                       "names the telegram channel"),
    "a channel's table beside its name as a word": ("publisher.subscribe", "def f(s):\n    return s['email']\n",
                                                    "name_offenders", "names the email channel: s['email']"),
    "a channel's table in a message beside the word": ("publisher.cli.subscribers", "X = f'set [email] from'\n",
                                                       "name_offenders", "names the email channel"),
    "one channel importing another": ("publisher.channels.web.evil", "from publisher.channels.github import calendar\n",
                                      "name_offenders", "names the github channel"),
    "click outside the CLI": ("publisher.evil", "import click\n", "ui_offenders", "publisher.evil imports click"),
}


@pytest.mark.parametrize("case", sorted(VIOLATIONS))
def test_each_rule_catches_a_deliberate_violation(case: str, tmp_path: Path, monkeypatch) -> None:
    import tests.test_architecture as me

    module, source, rule, words = VIOLATIONS[case]
    real = dict(modules())
    path = tmp_path / "evil.py"
    if module in real:  # a real module, with the violation added to its source
        path.write_text(real[module].read_text(encoding="utf-8") + "\n" + source, encoding="utf-8")
    else:
        path.write_text(source, encoding="utf-8")
    clean = getattr(me, rule)()
    monkeypatch.setattr(me, "modules", lambda: {**real, module: path})
    imported_names.cache_clear()
    try:
        found = getattr(me, rule)()
    finally:
        imported_names.cache_clear()
    report = "\n".join(" ".join(c) if isinstance(c, list) else str(c) for c in found)
    assert words in report, f"{case}: the rule {rule} did not catch it:\n{report}"
    assert found != clean


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


# ---- no long functions ----------------------------------------------------------------------

MAX_LINES = 60
# TEMPORARY (issue 24): functions over MAX_LINES in files other branches are changing now (ruff's
# per-file ignores in pyproject.toml list the same files). Fixing one fails this test until its
# line goes; a new long function fails it at once.
LONG_FUNCTIONS: set[str] = set()


def long_functions(roots=("publisher", "channels"), limit: int = MAX_LINES) -> set[str]:
    out = set()
    for root in roots:
        for path in sorted((ROOT / root).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > limit:
                    out.add(f"{path.relative_to(ROOT).as_posix()}:{node.name}")
    return out


def test_no_function_over_60_lines() -> None:
    assert long_functions() == LONG_FUNCTIONS
    assert "publisher/reader.py:read" in long_functions(limit=40)  # the measure measures


def test_ruff_enforces_complexity_15_and_60_statements() -> None:
    import subprocess
    import sys
    import tomllib

    lint = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["ruff"]["lint"]
    assert {"C90", "PLR"} <= set(lint["select"]) and lint["mccabe"]["max-complexity"] == 15
    assert lint["pylint"]["max-statements"] == 60 and lint["pylint"]["max-branches"] == 15
    branchy = "def f(x):\n" + "".join(f"    if x == {k}:\n        return {k}\n" for k in range(16)) + "    return -1\n"
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--stdin-filename", "publisher/x.py", "-"],
                          input=branchy, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 1 and "C901" in proc.stdout and "PLR0912" in proc.stdout, proc.stdout
