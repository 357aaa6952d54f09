"""The campaign report: what happened to each issue, from the ledger — as data, JSON or one HTML page.

`gather()` reads every number from the stores (publisher/stores/analytics.py: the ledger's pushes,
email_sends, mail_events, wechat_drafts, click_links/clicks/unsubscribes, and the subscribers
database's list and confirmations); `to_json()` and `to_html()` only present it. The HTML page is
self-contained (no request leaves it: a Content-Security-Policy of default-src 'none' holds it to
that), readable at 375 px, with each chart drawn as inline SVG by pygal and its numbers in a table
beside it (templates/report/).

Attribution: a bounce or complaint belongs to the issue its VERP address names (publisher/bounces.py);
an unsubscribe through `publisher serve` to the last issue sent to that address; a confirmation to
the first issue addressed to the new reader.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Any

from publisher.settings import Settings

ZERO_MAIL = {"sent": 0, "failed": 0, "bounced": 0, "bounced_hard": 0, "bounced_soft": 0, "complaints": 0,
             "unsubscribed": 0}
TOP_LINKS = 10


def _numbers(settings: Settings, ledger, issue: str, push: dict) -> dict[str, Any]:
    """A push's numbers, asked of its channel's transport (Transport.report); a channel no longer
    installed counts as one delivery, as a transport does by default."""
    from publisher.errors import PublisherError
    from publisher.transports import get_transport
    from publisher.transports.base import Transport

    try:
        cls = get_transport(push["channel"])
    except Exception:  # noqa: BLE001 - a channel no longer installed: plain push numbers
        cls = Transport
    try:
        numbers = cls.report(settings, ledger, issue, push)
    except PublisherError:
        raise
    except Exception as exc:  # a channel's own code failed: name it, no traceback
        raise PublisherError(f"the report of issue {issue}: the {push['channel']} channel's transport could not "
                             f"give its numbers ({type(exc).__name__}: {exc}); update or remove that channel's "
                             "package") from exc
    bad = sorted(k for k, v in numbers.items() if k in ZERO_MAIL and (isinstance(v, bool) or not isinstance(v, int)))
    if bad:
        raise PublisherError(f"the report of issue {issue}: the {push['channel']} channel's transport gave "
                             f"{', '.join(bad)} as something other than a whole number")
    return numbers


def issue_slugs(args: list[str]) -> list[str]:
    from publisher.errors import PublisherError

    out = []
    for a in args:
        m = re.search(r"(\d{4}-\d{2}-\d{2})", Path(a).name)
        if not m:
            raise PublisherError(f"'{a}' names no issue: give a date (YYYY-MM-DD) or an issue file")
        out.append(m.group(1))
    return out


def gather(settings: Settings, issues: list[str] | None = None) -> dict[str, Any]:
    """Every number of the report, per issue (newest first) and channel — from the SQLite files
    or the PostgreSQL database of `[database] url`. Creates no database that does not exist."""
    from publisher.stores import open_ledger, open_subscribers
    from publisher.stores.analytics import list_counts
    from publisher.stores.base import now_iso

    team = bool(settings["database"]["url"])
    subs = open_subscribers(settings, existing=True)
    ledger = open_ledger(settings, existing=True)
    data: dict[str, Any] = {
        "newsletter": settings["newsletter"]["name"],
        "generated_at": now_iso(),
        "clicks_enabled": bool(settings["analytics"]["clicks"]),
        "ledger": ledger.where if team else str(settings.require("paths", "ledger", "the ledger database")),
        "list": list_counts(subs) if subs else {},
        "issues": [],
    }
    try:
        return _gather(settings, data, ledger, subs, issues) if ledger is not None else data
    finally:  # this thread's connections (a served report runs in a worker thread)
        for db in (ledger, subs):
            if db is not None:
                db.close()


def _channel_row(settings: Settings, ledger, slug: str, push: dict, links: list[dict]) -> dict[str, Any]:
    row: dict[str, Any] = {"state": push["state"], "attempts": push["attempts"], "url": push["url"],
                           "started_at": push["created_at"], "updated_at": push["updated_at"], **ZERO_MAIL}
    numbers = _numbers(settings, ledger, slug, push)
    counted = numbers.pop("links", None) is not None
    row.update(numbers)
    own = [link for link in links if link["channel"] == push["channel"]]
    if own or counted:
        row["clicks"] = _clicks_by_url(own)
        row["links"] = own
    return row


def _gather(settings: Settings, data: dict[str, Any], ledger, subs, issues: list[str] | None) -> dict[str, Any]:
    from publisher.stores.analytics import AnalyticsStore, ReportReads, confirmed_addresses

    reads, analytics = ReportReads(ledger), AnalyticsStore(ledger)
    known = reads.issues()
    wanted = issues or known

    entries: dict[str, dict] = {}
    for slug in sorted(set(wanted) & set(known)):
        links = analytics.links_of(slug)
        entries[slug] = {"issue": slug, "channels": {
            push["channel"]: _channel_row(settings, ledger, slug, push, links) for push in reads.pushes(slug)}}

    # confirmations: each belongs to the first issue addressed to the new reader
    confirmed = confirmed_addresses(subs) if subs else []
    first = analytics.first_issues(confirmed)
    for entry in entries.values():
        entry["confirmations"] = 0
    for issue in first.values():
        if issue in entries:
            entries[issue]["confirmations"] += 1
    data["confirmations_since_last_issue"] = len(confirmed) - len(first)
    data["issues"] = [entries[s] for s in sorted(set(wanted), reverse=True) if s in entries]
    return data


def _clicks_by_url(links: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for link in links:
        out[link["url"]] = out.get(link["url"], 0) + link["clicks"]
    return out


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, indent=1)


# -- the page -----------------------------------------------------------------------------------


def _chart(kind: str, title: str, labels: list[str], series: list[tuple[str, list[int]]], **options) -> str:
    """One chart as inline SVG (pygal), without pygal's script (the tooltips it loads from the
    network; the page's CSP would refuse it) and without comments."""
    import pygal
    from pygal.style import Style

    # drawn 480 units wide: about life size in the page's chart column at 1280 px, and still
    # legible scaled down to a 375 px phone
    style = Style(font_family="'Noto Sans CJK SC', 'Noto Sans', sans-serif", background="transparent",
                  plot_background="#fff", label_font_size=12, major_label_font_size=12,
                  legend_font_size=13, title_font_size=15, value_font_size=12,
                  colors=("#2b6cb0", "#c05621", "#2f855a", "#b83280", "#6b46c1", "#718096"))
    cls = {"bar": pygal.Bar, "line": pygal.Line, "hbar": pygal.HorizontalBar}[kind]
    config = {"width": 480, "height": 340, "legend_at_bottom": True, "print_values": False, "truncate_label": 12,
              "truncate_legend": 40, "min_scale": 1, "max_scale": 8, **options}
    chart = cls(style=style, js=[], disable_xml_declaration=True, explicit_size=False, title=title, **config)
    chart.x_labels = labels
    for name, values in series:
        chart.add(name, values)
    svg = chart.render(is_unicode=True)
    svg = re.sub(r"<script\b.*?</script>", "", svg, flags=re.S)
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.S)
    return svg.replace("<svg ", f'<svg role="img" aria-label="{_attr(title)}" ', 1)


def _attr(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "—"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")


def figures(data: dict[str, Any]) -> dict[str, Any]:
    """The charts and their tables (each figure: title, svg, columns, rows)."""
    issues = list(reversed(data["issues"]))  # oldest first along the x axis
    labels = [e["issue"] for e in issues]

    def mail(e: dict) -> dict:
        """The issue's email numbers (all email channels added up)."""
        out = dict.fromkeys(("recipients", *ZERO_MAIL), 0)
        for row in e["channels"].values():
            if "recipients" in row:
                for k in out:
                    out[k] += row.get(k, 0)
        return out

    mails = [mail(e) for e in issues]
    figs: list[dict] = []
    if issues:
        cols = [("sent", "sent"), ("failed", "failed"), ("bounced_hard", "bounced (hard)"),
                ("bounced_soft", "bounced (soft)"), ("complaints", "complaints"), ("unsubscribed", "unsubscribed")]
        figs.append({"id": "delivery", "title": "Email delivery per issue",
                     "svg": _chart("bar", "Email delivery per issue", labels,
                                   [(name, [m[k] for m in mails]) for k, name in cols]),
                     "columns": ["issue", *[n for _, n in cols]],
                     "rows": [[lab, *[m[k] for k, _ in cols]] for lab, m in zip(labels, mails, strict=True)]})
        figs.append({"id": "list", "title": "List size at each issue (recipients)",
                     "svg": _chart("line", "List size at each issue (recipients)", labels,
                                   [("recipients", [m["recipients"] for m in mails])], include_x_axis=True,
                                   margin_right=45),  # room for the last date, centred on its point
                     "columns": ["issue", "recipients"],
                     "rows": [[lab, m["recipients"]] for lab, m in zip(labels, mails, strict=True)]})
        series = [("confirmations", [e["confirmations"] for e in issues]),
                  ("unsubscribes", [m["unsubscribed"] for m in mails]),
                  ("bounces", [m["bounced"] for m in mails])]
        figs.append({"id": "growth", "title": "Confirmations, unsubscribes and bounces per issue",
                     "svg": _chart("bar", "Confirmations, unsubscribes and bounces per issue", labels, series),
                     "columns": ["issue", *[n for n, _ in series]],
                     "rows": [[lab, *[v[i] for _, v in series]] for i, lab in enumerate(labels)]})
    return {"figures": figs, "issues": [_issue_view(e) for e in data["issues"]]}


def _short(label: str, width: int = 26) -> str:
    """A story title cut to `width` columns (a CJK character is two) for a chart's axis; the
    table beside the chart has it whole."""
    used = 0
    for i, ch in enumerate(label):
        used += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
        if used > width:
            return label[:i].rstrip() + "…"
    return label


def _issue_view(e: dict) -> dict:
    channels = []
    top = None
    for name, row in e["channels"].items():
        channels.append({"name": name, **row, "duration": _duration(row.get("send_seconds"))})
        links = row.get("links") or []
        if links and top is None:
            ranked = sorted(links, key=lambda link: (-link["clicks"], link["number"]))
            shown = [link for link in ranked[:TOP_LINKS] if link["clicks"]] or ranked[:1]
            title = f"Most-read stories of {e['issue']} ({name}, clicks)"
            labels = [_short(link["label"] or link["url"]) for link in reversed(shown)]
            # pygal sizes the label column as if every character were Latin: a CJK one is wider
            wide = max(sum(unicodedata.east_asian_width(c) in ("W", "F") for c in lab) for lab in labels)
            top = {"id": f"clicks-{e['issue']}-{name}", "title": title, "all": ranked,
                   "svg": _chart("hbar", title, labels, [("clicks", [link["clicks"] for link in reversed(shown)])],
                                 show_legend=False, height=130 + 34 * len(shown), margin_left=20 + 6 * wide)}
    return {"issue": e["issue"], "channels": channels, "confirmations": e["confirmations"], "top": top}


def to_html(data: dict[str, Any], settings: Settings) -> str:
    from publisher.channels.base import template_env

    env = template_env(settings)
    return env.get_template("report/report.html").render(data=data, **figures(data))


def write_report(settings: Settings, issues: list[str] | None, out: Path, fmt: str = "html") -> Path:
    """Gather and write the report to `out` (atomically); returns the path."""
    from publisher.atomic import atomic_write

    data = gather(settings, issues)
    text = to_json(data) + "\n" if fmt == "json" else to_html(data, settings)
    return atomic_write(out, text.encode("utf-8"))


def default_out(settings: Settings) -> Path:
    return Path(settings.require("paths", "out", "where the report is written")) / "report.html"


def report_link(settings: Settings) -> str:
    """Where the report is, for `publisher status`: the served page when `publisher serve` answers
    /report (its secret is set and [analytics] base_url names the server), else the last page
    `publisher report` wrote, else the command that writes it."""
    import os

    base = settings["analytics"]["base_url"]
    var = settings["analytics"]["report_secret_env"]
    if base and var and os.environ.get(var):
        return f"report: {base.rstrip('/')}/report (password: ${var}); `publisher report` writes it to a file"
    path = default_out(settings)
    if path.is_file():
        return f"report: file://{path.resolve()} (refresh it with `publisher report`)"
    return "report: `publisher report` writes one (HTML, or --format json)"
