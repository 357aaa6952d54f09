"""Bounce processing and `forget` at list scale (figures, not a test).

    .venv/bin/python bench/bounces.py [--n 2000] [--subscribers 100000]

Prints messages/s applying a Maildir of N mixed reports (hard, soft, complaints, junk), the time
of a re-run that finds them all already processed, and the time `forget` takes on a list of
--subscribers addresses (it vacuums both databases: linear in their size).
"""

from __future__ import annotations

import argparse
import mailbox
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from publisher.bounces import process_mailboxes, verp_address  # noqa: E402
from publisher.settings import load_settings  # noqa: E402
from publisher.stores.ledger import Ledger  # noqa: E402
from publisher.subscribers import SubscriberDB  # noqa: E402
from tests import bounce_samples as S  # noqa: E402

SECRET = "bench-secret"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--subscribers", type=int, default=100_000)
    args = ap.parse_args()
    os.environ["PUBLISHER_UNSUBSCRIBE_SECRET"] = SECRET
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "publisher.toml").write_text('[paths]\nledger = "publisher.db"\n[email]\nlist_id = "l.example.org"\n'
                                          'subscribers_db = "subscribers.db"\n[bounces]\n'
                                          'address = "bounces@example.org"\n')
        settings = load_settings(d / "publisher.toml")
        db = SubscriberDB(d / "subscribers.db")
        emails = [f"reader{i}@example.com" for i in range(args.subscribers)]
        t = time.perf_counter()
        for i in range(0, len(emails), 5000):
            db.add_many([(e, "", "") for e in emails[i:i + 5000]])
        print(f"import {len(emails)} subscribers: {time.perf_counter() - t:.2f} s")
        box = mailbox.Maildir(str(d / "Maildir"))
        makers = [S.postfix_hard, S.gmail_hard, S.microsoft_hard, S.exim_dsn_soft]
        for k in range(args.n):
            e = emails[k % len(emails)]
            to = verp_address("bounces@example.org", SECRET, "l.example.org", "2026-11-23", db.get(e).id, e)
            if k % 10 == 9:
                box.add(S.junk("bounces@example.org", mid=f"junk-{k}"))
            else:
                box.add(makers[k % 4](to, e, mid=f"m-{k}"))
        t = time.perf_counter()
        s = process_mailboxes(settings, mailbox=d / "Maildir", ledger=Ledger(d / "publisher.db"))
        dt = time.perf_counter() - t
        print(f"apply {args.n} reports: {dt:.2f} s = {args.n / dt:.0f} msg/s ({s.line()})")
        for f in (d / "Maildir" / ".processed" / "cur").iterdir():
            os.replace(f, d / "Maildir" / "cur" / f.name)
        t = time.perf_counter()
        s = process_mailboxes(settings, mailbox=d / "Maildir", ledger=Ledger(d / "publisher.db"))
        dt = time.perf_counter() - t
        print(f"re-run over the same {args.n}: {dt:.2f} s ({s.already} already processed)")
        from click.testing import CliRunner

        from publisher.cli import cli

        t = time.perf_counter()
        r = CliRunner().invoke(cli, ["--config", str(d / "publisher.toml"), "subscribers", "forget", emails[7]])
        print(f"forget on {len(emails)} subscribers: {time.perf_counter() - t:.2f} s (exit {r.exit_code})")


if __name__ == "__main__":
    main()
