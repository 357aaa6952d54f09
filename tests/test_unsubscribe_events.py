"""A provider's unsubscribe (webhooks) is its own kind of mail event, not a spam complaint, on both
backends; ledgers recorded before (schema version 1: such events stored as `complaint` with
evidence "unsubscribe: …") are refused until `publisher db upgrade` relabels them."""

from __future__ import annotations

import pytest

from publisher.bounces import Processor, Report
from publisher.stores import schema
from publisher.stores.base import Store
from publisher.stores.ledger import Ledger
from publisher.stores.mail import MailStore
from publisher.subscribers import open_db
from tests.provider_support import add_subscribers, provider_env, settings_for

OLD_EVENTS = """
CREATE TABLE mail_events (
    key          TEXT PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('hard', 'soft', 'complaint', 'ignored')),
    email        TEXT,
    issue        TEXT,
    status       TEXT,
    evidence     TEXT NOT NULL,
    action       TEXT NOT NULL,
    source       TEXT NOT NULL,
    processed_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS mail_events_email ON mail_events (email);
"""


def test_a_provider_unsubscribe_is_recorded_as_such_and_not_counted_as_a_complaint(tmp_path, monkeypatch, db_url):
    provider_env(monkeypatch)
    settings = settings_for(tmp_path, "postmark", "http://127.0.0.1:9", database_url=db_url)
    a, b = add_subscribers(settings, 2)
    from publisher.stores import open_ledger

    ledger = open_ledger(settings)
    proc = Processor(settings, ledger, open_db(settings), "", verp=False)
    proc.apply("postmark:subscription:1", Report("unsubscribe", "Postmark suppression: ManualSuppression", "",
                                                 issue="2026-11-23"), a, "postmark")
    proc.apply("postmark:spamcomplaint:2", Report("complaint", "Postmark SpamComplaint", "abuse",
                                                  issue="2026-11-23"), b, "postmark")
    kinds = {e: [r[1] for r in MailStore(ledger).events_of(e)] for e in (a, b)}
    assert kinds == {a: ["unsubscribe"], b: ["complaint"]}
    assert proc.summary.unsubscribes == 1 and proc.summary.complaints == 1
    assert "1 unsubscribe(s) at the provider" in proc.summary.line()
    assert open_db(settings).get(a).state == open_db(settings).get(b).state == "unsubscribed"
    if not db_url:  # the report's reads are SQLite-only today (sqlite_master): not this test's subject
        from publisher.stores.analytics import ReportReads

        assert ReportReads(ledger).events("2026-11-23") == {"complaint": 1}  # the unsubscribe is not one


def test_a_version_1_ledger_is_refused_and_db_upgrade_relabels_its_unsubscribes(tmp_path, db_url):
    where = db_url or tmp_path / "publisher.db"
    ledger = Ledger(where)
    conn = ledger.connect()
    conn.execute("DROP TABLE IF EXISTS mail_events")
    ledger.ensure(OLD_EVENTS)  # the ledger as version 1 wrote it
    conn = ledger.connect()
    for key, kind, evidence in (("k1", "complaint", "unsubscribe: Mailgun unsubscribed : "),
                                ("k2", "complaint", "SES complaint: abuse"), ("k3", "hard", "5.1.1")):
        conn.execute("INSERT INTO mail_events VALUES (?, ?, 'a@x.org', '2026-11-23', '', ?, 'x', 'test', 't')",
                     (key, kind, evidence))
    conn.execute("UPDATE schema_version SET version = 1 WHERE part = 'ledger'")
    ledger.close()
    with pytest.raises(schema.SchemaError, match="schema version 1, this publisher needs 2: run `publisher db upgrade`"):
        Ledger(where)
    assert schema.upgrade(Store(where), "ledger", Ledger.schema) == (1, 2)
    ledger = Ledger(where)
    rows = {r[0]: (r[1], r[2]) for r in ledger.connect().execute("SELECT key, kind, evidence FROM mail_events")}
    assert rows == {"k1": ("unsubscribe", "Mailgun unsubscribed : "), "k2": ("complaint", "SES complaint: abuse"),
                    "k3": ("hard", "5.1.1")}
    MailStore(ledger).record_event("k4", "unsubscribe", "b@x.org", None, None, "e", "a", "s")  # the CHECK allows it
    assert MailStore(ledger).event("k4")[0] == "unsubscribe"
    assert schema.upgrade(Store(where), "ledger", Ledger.schema) == (2, 2)

