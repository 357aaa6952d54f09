"""The campaign report's numbers of a mail campaign (Transport.report of the SMTP transport):
recipients by state, bounces and complaints by the issue their VERP address names, unsubscribes
through `publisher serve`, and the time the campaign took to send (docs/report.md, Attribution)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any


def _when(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def numbers(settings, ledger, issue: str, push: Mapping[str, Any]) -> dict[str, Any]:
    """sent / failed per recipient, bounced (hard, soft), complaints, unsubscribed, recipients,
    other_states, finished_at, send_seconds; with clicks on, `links` (filled in by the report)."""
    from publisher.stores.analytics import ReportReads

    reads = ReportReads(ledger)
    sends = reads.sends(issue)
    ev = reads.events(issue)
    first, last = reads.send_span(issue)
    start = _when(push["created_at"]) or _when(first)
    end = _when(last)
    out: dict[str, Any] = {
        "recipients": sum(sends.values()), "sent": sends.get("sent", 0), "failed": sends.get("failed", 0),
        "other_states": {k: v for k, v in sorted(sends.items()) if k not in ("sent", "failed")},
        "bounced_hard": ev.get("hard", 0), "bounced_soft": ev.get("soft", 0),
        "bounced": ev.get("hard", 0) + ev.get("soft", 0), "complaints": ev.get("complaint", 0),
        "unsubscribed": reads.unsubscribed(issue),
        "finished_at": last,
        "send_seconds": int((end - start).total_seconds()) if start and end and end >= start else None,
    }
    if settings["analytics"]["clicks"]:
        out["links"] = []
    return out
