"""Subscribers: CSV import with bad rows reported by line, states, streaming, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from publisher.subscribers import SubscriberDB, import_csv
from tests.conftest import ROOT


def run(cwd: Path, *args: str):
    env = {**os.environ}
    env.pop("PUBLISHER_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "publisher.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env={**env, "PYTHONPATH": str(ROOT)})


CSV = """email,name,tags
ann@example.com,Ann,ai
not-an-email,Bob,
carol@example.com,"Chen, Carol",
dave@example.com,Dave,a,b,c
,nobody,

erin@例子.example,Erin,
frank@example.com,弗兰克,"x,y"
"""


def test_import_reports_bad_rows_by_line_and_imports_good_ones(tmp_path):
    f = tmp_path / "subs.csv"
    f.write_text(CSV, encoding="utf-8")
    db = SubscriberDB(tmp_path / "s.db")
    n, problems = import_csv(db, f)
    assert n == 4  # an internationalized domain is deliverable (publisher.addresses: IDNA, SMTPUTF8)
    assert [(p.line, p.level) for p in problems] == [(3, "error"), (5, "error"), (6, "error")]
    assert "not-an-email" in problems[0].message and str(f) in str(problems[0])
    assert "5 columns" in problems[1].message
    assert [s.email for s in db.iter()] == ["ann@example.com", "carol@example.com", "erin@例子.example",
                                            "frank@example.com"]
    assert db.get("carol@example.com").name == "Chen, Carol"
    assert db.get("frank@example.com").tags == "x,y"


def test_unsubscribed_and_bounced_stay_so_after_reimport(tmp_path):
    f = tmp_path / "subs.csv"
    f.write_text("a@example.com,A\nb@example.com,B\nc@example.com,C\n", encoding="utf-8")
    db = SubscriberDB(tmp_path / "s.db")
    assert import_csv(db, f) == (3, [])
    db.set_state("a@example.com", "unsubscribed")
    db.set_state("B@EXAMPLE.COM", "bounced")  # addresses compare case-insensitively
    import_csv(db, f)
    assert [s.email for s in db.iter()] == ["c@example.com"]
    assert db.counts() == {"pending": 0, "active": 1, "unsubscribed": 1, "bounced": 1}


def test_recipients_are_streamed_in_pages(tmp_path):
    db = SubscriberDB(tmp_path / "s.db")
    db.add_many([(f"u{i}@example.com", "", "") for i in range(2500)])
    pages = list(db.iter_pages("active", page=1000))
    assert [len(p) for p in pages] == [1000, 1000, 500]
    # an unsubscribe that lands between pages is seen by the next page
    it = db.iter_pages("active", page=1000)
    next(it)
    db.set_state("u1500@example.com", "unsubscribed")
    rest = [s.email for p in it for s in p]
    assert "u1500@example.com" not in rest and len(rest) == 1499


def test_cli_import_list_count_remove(tmp_path):
    (tmp_path / "publisher.toml").write_text('[email]\nsubscribers_db = "subs.db"\n', encoding="utf-8")
    (tmp_path / "subs.csv").write_text(CSV, encoding="utf-8")
    p = run(tmp_path, "subscribers", "import", "subs.csv")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "subs.csv:3: error: not an email address: 'not-an-email'" in p.stderr
    assert "imported 4 row(s), skipped 3 bad row(s)" in p.stdout
    p = run(tmp_path, "subscribers", "remove", "ann@example.com")
    assert p.returncode == 0, p.stderr
    p = run(tmp_path, "subscribers", "count")
    assert p.stdout.strip() == "pending=0 active=3 unsubscribed=1 bounced=0 total=4"
    p = run(tmp_path, "subscribers", "list")
    assert p.stdout.splitlines() == ["carol@example.com,\"Chen, Carol\",,active", "erin@例子.example,Erin,,active",
                                     'frank@example.com,弗兰克,"x,y",active']
    p = run(tmp_path, "subscribers", "remove", "nobody@example.com")
    assert p.returncode == 1 and "no subscriber 'nobody@example.com'" in p.stderr and "Traceback" not in p.stderr
    p = run(tmp_path, "subscribers", "import", "missing.csv")
    assert p.returncode == 1 and "missing.csv does not exist" in p.stderr
