"""Stores and single sources of truth (issue 14, items 3 and 5): every SQL statement lives in
publisher/stores/, each table is declared once, the stores import no transport, and each rule
(limits, the unsubscribe placeholder, "is this URL remote", redaction, atomic writes) has one
definition that every caller uses."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from publisher.channels import html_writer
from publisher.channels.base import Rendition, template_env
from publisher.channels.email import UNSUBSCRIBE_PLACEHOLDER
from publisher.channels.email import limits as email_limits
from publisher.channels.wechat import limits as wechat_limits

from publisher import mailmsg, preview, refs
from publisher.redact import redact
from publisher.settings import load_settings
from publisher.stores.ledger import Ledger
from publisher.stores.mail import MailStore
from publisher.stores.subscribers import SubscriberDB
from tests.conftest import ROOT

SQL = re.compile(r"(?is)\b(?:SELECT\b.+\bFROM|INSERT\s+(?:OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|"
                 r"CREATE\s+(?:TABLE|INDEX)|PRAGMA\s+\w+)\b")
STORES = ROOT / "publisher" / "stores"


def _sources() -> list[Path]:
    return sorted([*(ROOT / "publisher").rglob("*.py"), *(ROOT / "channels").rglob("*.py")])


def _imports(tree: ast.AST) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(("." * node.level) + node.module)
    return out


def test_sql_only_in_the_stores() -> None:
    offenders = []
    for path in _sources():
        if STORES in path.parents:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if "sqlite3" in _imports(tree):
            offenders.append(f"{path.relative_to(ROOT)}: imports sqlite3")
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.strip()[:60]!r}")
            if isinstance(node, ast.Attribute) and node.attr in ("execute", "executemany", "executescript"):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}(")
    assert not offenders, "SQL outside publisher/stores/:\n" + "\n".join(offenders)


def test_each_table_is_declared_once() -> None:
    seen: dict[str, list[str]] = {}
    for path in STORES.glob("*.py"):
        for name in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", path.read_text(encoding="utf-8")):
            seen.setdefault(name, []).append(path.name)
    assert {"pushes", "leases", "email_sends", "mail_events", "subscribers", "consent", "suppressions",
            "wechat_tokens", "wechat_uploads", "wechat_intents", "wechat_drafts", "wechat_remote_images",
            "link_cache"} <= set(seen)
    twice = {k: v for k, v in seen.items() if len(v) > 1}
    assert not twice, twice


def test_stores_import_no_transport_and_the_subscriber_side_no_email_transport() -> None:
    for path in STORES.glob("*.py"):
        for name in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if name.startswith(("publisher", ".")):
                # the registry (ground) only says which channel's table names the subscribers database
                assert name.startswith(("publisher.stores", "publisher.errors", "publisher.registry", ".")), \
                    (path.name, name)
    for module in ("subscribers", "bounces", "unsubscribe"):
        names = _imports(ast.parse((ROOT / "publisher" / f"{module}.py").read_text(encoding="utf-8")))
        assert not any(n.startswith("publisher.transports") for n in names), (module, names)


def test_mail_store_marks_are_committed_one_row_at_a_time(tmp_path: Path) -> None:
    """What the kill trials rely on: a mark is visible to another connection at once (no open
    transaction), `sending` rows are found and settled, final rows are never offered again."""
    store = MailStore(Ledger(tmp_path / "l.db"))
    other = MailStore(Ledger(tmp_path / "l.db"))
    store.mark("2026-11-23", "a@example.com", "sending", message_id="<m1>", attempt=True)
    assert other.in_flight("2026-11-23") == ["a@example.com"]
    store.mark("2026-11-23", "b@example.com", "sent", message_id="<m2>", code=250)
    assert other.final("2026-11-23", ["a@example.com", "b@example.com"]) == ["b@example.com"]
    other.settle_in_flight("2026-11-23", "ambiguous")
    assert store.counts("2026-11-23") == {"ambiguous": 1, "sent": 1}
    store.mark("2026-11-23", "c@example.com", "failed", message_id="<m3>", code=550, error="RCPT TO: 550 5.1.1")
    store.unfail("2026-11-23", ["c@example.com"])
    assert list(store.listing("2026-11-23", "pending")) == [("c@example.com", "pending", 550, "RCPT TO: 550 5.1.1")]
    assert store.forget("C@example.com") == 1 and store.counts("2026-11-23") == {"ambiguous": 1, "sent": 1}


def test_subscriber_store_lookups(tmp_path: Path) -> None:
    db = SubscriberDB(tmp_path / "s.db")
    db.add_many([("x@example.com", "X", "")])
    sub = db.get("x@example.com")
    assert db.email_of(sub.id) == "x@example.com" and db.email_of(sub.id + 1) is None
    added, changed = db.times(sub.id)
    assert added and changed


# -- one source of truth --------------------------------------------------------------------------


def _rendition(channel: str, body: str, **meta) -> Rendition:
    return Rendition(channel=channel, issue="2026-11-23", body=body, media_type="text/html",
                     filename="2026-11-23.html", metadata=meta)


@pytest.mark.parametrize("extra, flagged", [(0, False), (1, True)])
def test_preview_and_check_agree_on_the_email_size(project: Path, extra: int, flagged: bool) -> None:
    settings = load_settings()
    body = "x" * (email_limits.HTML_MAX_BYTES + extra)
    r = _rendition("email", body, subject="s")
    panel = str(preview.panel(r, settings, preview.ImageTable(inline=True), None, template_env(settings)))
    assert ("Gmail clips" in panel) is flagged
    assert bool(email_limits.check(r)) is flagged


@pytest.mark.parametrize("extra, flagged", [(0, False), (1, True)])
def test_preview_and_check_agree_on_the_wechat_content_bytes(project: Path, extra: int, flagged: bool) -> None:
    settings = load_settings()
    r = _rendition("wechat", "<p>" + "x" * (wechat_limits.CONTENT_MAX_BYTES - 7 + extra) + "</p>", title="t")
    assert len(r.body.encode()) == wechat_limits.CONTENT_MAX_BYTES + extra
    panel = str(preview.panel(r, settings, preview.ImageTable(inline=True), None, template_env(settings)))
    row = re.search(r'<tr class="(\w+)" data-field="content bytes">', panel)
    assert row and (row.group(1) == "over") is flagged
    assert any(v.what == "content-bytes" for v in wechat_limits.check(r)) is flagged


def test_check_knows_the_wechat_source_url_rule_the_push_enforces() -> None:
    from publisher.channels.wechat.transport import check_limits

    from publisher.errors import TransportError

    url = "https://example.org/" + "a" * (wechat_limits.SOURCE_URL_MAX_BYTES - 19)
    assert len(url) == wechat_limits.SOURCE_URL_MAX_BYTES + 1
    found = [v for v in wechat_limits.check(_rendition("wechat", "<p>x</p>", content_source_url=url))]
    assert [v.what for v in found] == ["content_source_url"] and found[0].limit == 1024
    with pytest.raises(TransportError, match="content_source_url"):
        check_limits({"title": "t", "content": "<p>x</p>", "content_source_url": url})
    assert not wechat_limits.check(_rendition("wechat", "<p>x</p>", content_source_url=url[:-1]))


def test_one_unsubscribe_placeholder() -> None:
    assert mailmsg.PLACEHOLDER is UNSUBSCRIBE_PLACEHOLDER == "%%UNSUBSCRIBE_URL%%"
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        if path != ROOT / "publisher" / "tokens.py":
            assert '"%%UNSUBSCRIBE_URL%%"' not in text, path


def test_one_remote_rule() -> None:
    assert html_writer.is_remote is refs.is_remote
    for ref, remote in (("https://a.example/x.png", True), ("//cdn.example/x.png", True),
                        ("ftp://h/x", True), ("images/x.png", False), ("#top", False), ("mailto:a@b.c", False)):
        assert refs.is_remote(ref) is remote, ref
        assert refs.is_local(ref) is (not remote and not ref.startswith(("#", "mailto:"))), ref


def test_one_redaction(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    monkeypatch.setenv(settings["smtp"]["password_env"], "hunter2-smtp")
    text = "login hunter2-smtp failed; GET /cgi-bin/x?access_token=T0K3N&secret=S3CR3T appsecret-value https://u:pw@h/"
    out = redact(text, settings, secrets=("appsecret-value",))
    for secret in ("hunter2-smtp", "T0K3N", "S3CR3T", "appsecret-value", ":pw@"):
        assert secret not in out, out
    assert "access_token=***" in out and "https://u:***@h/" in out
    assert redact(None) == ""
    from publisher.channels.wechat import api as wechat_api

    from publisher import push

    assert push.redact is redact and wechat_api.redact is redact


def test_files_are_written_only_through_atomic_write() -> None:
    writes = re.compile(r"\.write_(?:text|bytes)\(|open\([^)]*['\"][wa]b?['\"]|os\.replace\(")
    allowed = {("publisher", "atomic.py"), ("publisher", "bounces.py"),  # a Maildir message is moved: a rename
               ("stores", "ledger.py"),  # the crash-test hook announces its pause point
               ("stores", "base.py")}  # DiskReserve: room held on the disk, not content
    for path in _sources():
        if (path.parent.name, path.name) in allowed:
            continue
        hits = [m.group(0) for m in writes.finditer(path.read_text(encoding="utf-8"))]
        assert not hits, (path, hits)


def test_two_processes_opening_a_new_ledger_together_never_crash(tmp_path: Path) -> None:
    """Switching a new database to WAL needs a moment of exclusive access and SQLite answers
    "database is locked" at once, without its busy handler: two `push` runs started together on a
    fresh ledger crashed with a traceback (about 1 in 4). Each opener now waits for the other."""
    import subprocess
    import sys

    code = ("import sys\nfrom publisher.stores.ledger import Ledger, LeaseHeld\n"
            "try:\n    Ledger(sys.argv[1]).acquire('2026-11-23', 'email')\n    print('got')\n"
            "except LeaseHeld:\n    print('busy')\n")
    crashes = []
    for round_ in range(20):
        db = tmp_path / f"r{round_}" / "publisher.db"
        procs = [subprocess.Popen([sys.executable, "-c", code, str(db)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        for p in procs:
            out, err = p.communicate(timeout=60)
            if p.returncode != 0 or out.strip() not in ("got", "busy"):
                crashes.append(err.strip().splitlines()[-1:] or out)
    assert crashes == []
