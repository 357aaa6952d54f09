"""`publisher check`: everything an editor should know before publishing.

Five kinds of finding, each with the file and, where there is one, the line:

- structure: what the reader refuses (errors) or mends (warnings);
- lead: 导读 missing (an error in a `ready` issue, a warning in a draft) or `本次N条` not matching;
- limit: a channel's rendition over a platform limit (publisher/limits.py), with value and limit;
- link: a dead link (4xx, 5xx, DNS failure, connection error, timeout); skipped with --offline;
- repeat: a story that already ran in an earlier issue of the archive (publisher/repeats.py).

Exit status 0 when there is no error, 1 when there is one; with --strict warnings fail too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from publisher.errors import ConfigError, Diagnostic, PublisherError, SourceError
from publisher.model import Issue
from publisher.reader import read_issue, urls_with_lines

LEVELS = ("error", "warning")
KINDS = ("structure", "lead", "limit", "link", "repeat")
KIND_TITLES = {
    "structure": "structure",
    "lead": "导读 (lead)",
    "limit": "channel limits",
    "link": "links",
    "repeat": "stories that already ran",
}
# the kind of a reader's diagnostic, by its code (every other code is "structure")
READER_KINDS = {"lead-count": "lead", "duplicate-url": "repeat"}
PROGRESS_MIN_URLS = 10  # show progress on a terminal when checking at least this many links

# progress(done, total): links checked so far (the command shows it on a terminal)
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Finding:
    level: str  # "error" | "warning"
    kind: str  # one of KINDS
    file: str | None
    line: int | None
    message: str
    channel: str | None = None
    value: int | str | None = None
    limit: int | str | None = None
    code: str | None = None  # the machine name of the finding (`summary-before-item`, `dead-link` …)

    def __str__(self) -> str:
        return str(Diagnostic(self.level, self.message, self.file, self.line))


@dataclass
class Checked:
    """One issue file after reading: its findings, and the Issue when it could be read."""

    path: Path
    issue: Issue | None
    findings: list[Finding]
    lines: list[str]

    def line_of(self, pattern: str) -> int | None:
        rx = re.compile(pattern)
        return next((n for n, text in enumerate(self.lines, 1) if rx.search(text)), None)


# ---- structure and lead ------------------------------------------------------------------------


def read_and_lint(path: Path) -> Checked:
    try:
        result = read_issue(path)
    except SourceError as exc:
        findings = [Finding(d.level, "structure", d.file, d.line, d.message, code=d.code or "unreadable")
                    for d in exc.diagnostics]
        return Checked(path, None, findings, [])
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    findings = [Finding(d.level, READER_KINDS.get(d.code or "", "structure"), d.file, d.line, d.message, code=d.code)
                for d in result.warnings]
    checked = Checked(path, result.issue, findings, lines)
    checked.findings.extend(lead_findings(checked))
    return checked


def lead_findings(checked: Checked) -> list[Finding]:
    issue = checked.issue
    assert issue is not None
    if issue.lead:
        return []
    line = checked.line_of(r"^\s*>\s*导读") or checked.line_of(r"^#\s")
    if issue.status == "ready":
        return [Finding("error", "lead", str(checked.path), line,
                        "the 导读 is empty in a ready issue: write the lead (> 导读：本次N条。…) "
                        "or set status: draft", code="lead-empty")]
    return [Finding("warning", "lead", str(checked.path), line,
                    "the 导读 is empty (fine for a draft; an error once status is ready)", code="lead-empty")]


# ---- channel limits ----------------------------------------------------------------------------


def limit_findings(checked: Checked, settings) -> list[Finding]:
    from publisher.channels.base import check_rendition
    from publisher.pipeline import context_for, render

    issue = checked.issue
    assert issue is not None
    file = str(checked.path)
    out: list[Finding] = []
    ctx = context_for(settings, issue)
    for name in settings.enabled_channels:
        try:
            rendition = render(issue, name, settings, ctx)
        except ConfigError as exc:
            out.append(Finding("warning", "limit", file, None,
                               f"channel {name} is not available, its limits were not checked: {exc.message}",
                               channel=name, code="channel-unavailable"))
            continue
        except PublisherError as exc:
            out.append(Finding("error", "limit", exc.file or file, exc.line,
                               f"channel {name} cannot render this issue: {exc.message}", channel=name,
                               code="render-failed"))
            continue
        except Exception as exc:  # a channel's bug must not hide the other findings
            out.append(Finding("error", "limit", file, None,
                               f"channel {name} failed to render this issue ({type(exc).__name__}: {exc})",
                               channel=name, code="render-failed"))
            continue
        try:
            from publisher.transports import get_transport

            transport_warnings = get_transport(name).check_limits(rendition, settings)
        except PublisherError as exc:
            transport_warnings = [f"its transport's limits were not checked: {exc.message}"]
        out += [Finding("warning", "limit", file, None, w, channel=name, code="transport-limit")
                for w in transport_warnings]
        for v in check_rendition(rendition):
            line = None
            if v.what == "title":
                line = checked.line_of(r"^#\s")
            elif v.what == "digest":
                line = checked.line_of(r"^digest\s*:") or checked.line_of(r"^\s*>\s*导读")
            elif v.what == "author":
                line = checked.line_of(r"^author\s*:")
            out.append(Finding("error", "limit", file, line, v.message, channel=v.channel, value=v.value,
                               limit=v.limit, code=f"over-limit-{v.what}"))
    return out


# ---- links -----------------------------------------------------------------------------------


def link_findings(checked_files: list[Checked], settings, *, progress: Progress | None = None
                  ) -> tuple[list[Finding], dict]:
    from publisher.linkcheck import LinkChecker, checkable

    where: list[tuple[str, str, int]] = []  # (url, file, line)
    for c in checked_files:
        if c.issue is not None:
            where.extend((url.strip(), str(c.path), line) for url, line in urls_with_lines(c.issue)
                         if checkable(url))
    stats = {"urls": len({u for u, _, _ in where}), "dead": 0, "cached": 0}
    if not where:
        return [], stats
    from publisher.stores import open_ledger

    ledger = open_ledger(settings) if settings["database"]["url"] or settings.path("paths", "ledger") else None
    checker = LinkChecker.from_settings(settings, ledger)
    try:
        results = checker.check([u for u, _, _ in where], progress=progress)
    finally:
        if ledger is not None:
            ledger.close()
    stats["cached"] = sum(1 for r in results.values() if r.cached)
    dead = {u: r for u, r in results.items() if not r.ok}
    stats["dead"] = len(dead)
    unreachable = all(r.status is None and (r.error or "").startswith(("DNS failure", "connection error"))
                      for r in dead.values())
    if dead and len(dead) == len(results) and unreachable:
        # Not one link answered: this machine is offline, which says nothing about the links.
        return [Finding("warning", "link", None, None,
                        f"no link could be reached ({len(dead)} of {len(results)} failed with DNS or "
                        "connection errors): is this machine offline? links were not checked "
                        "(use --offline to skip them)", code="links-unreachable")], stats
    out = []
    for url, file, line in where:
        r = dead.get(url)
        if r is not None and r.refused:
            out.append(Finding("error", "link", file, line,
                               f"link to a non-public address, not probed ({r.error.split(': ', 1)[-1]}): {url}",
                               value=r.error, code="private-link"))
        elif r is not None:
            out.append(Finding("error", "link", file, line, f"dead link ({r.describe()}): {url}",
                               value=r.status if r.status is not None else r.error, code="dead-link"))
    return _dedupe(out), stats


def _dedupe(findings: list[Finding]) -> list[Finding]:
    return list(dict.fromkeys(findings))


# ---- repeats ---------------------------------------------------------------------------------


def repeat_findings(checked: Checked, index) -> list[Finding]:
    issue = checked.issue
    assert issue is not None
    return [Finding("warning", "repeat", str(checked.path), r.line, r.message,
                    value=r.earlier.date.isoformat(), limit=f"{r.earlier.file}:{r.earlier.line}", code="repeat")
            for r in index.find(issue, str(checked.path))]


# ---- output ----------------------------------------------------------------------------------


def to_json(checked_files: list[Checked], findings: list[Finding], links: dict | None) -> str:
    doc = {
        "files": [
            {"file": str(c.path), "readable": c.issue is not None,
             "date": c.issue.date.isoformat() if c.issue else None,
             "status": c.issue.status if c.issue else None,
             "items": c.issue.item_count if c.issue else None}
            for c in checked_files
        ],
        "findings": [asdict(f) for f in findings],
        "errors": sum(f.level == "error" for f in findings),
        "warnings": sum(f.level == "warning" for f in findings),
        "links": links,
    }
    return json.dumps(doc, ensure_ascii=False, indent=2)


# ---- every check -------------------------------------------------------------------------------


def run_check(paths: list[Path], settings, *, offline: bool = False, progress: Progress | None = None
              ) -> tuple[list[Checked], list[Finding], dict | None]:
    """Every check over every file; the findings in file order, then by kind and line."""
    from publisher.repeats import ArchiveIndex

    checked_files = [read_and_lint(p) for p in paths]
    readable = [c for c in checked_files if c.issue is not None]
    index = ArchiveIndex(settings.path("paths", "issues")) if readable else None
    for c in readable:
        c.findings.extend(limit_findings(c, settings))
        c.findings.extend(repeat_findings(c, index))
    link_stats = None
    extra: list[Finding] = []
    if not offline and readable:
        link_list, link_stats = link_findings(readable, settings, progress=progress)
        extra = link_list
    findings: list[Finding] = []
    for c in checked_files:
        own = c.findings + [f for f in extra if f.file == str(c.path)]
        findings.extend(sorted(own, key=lambda f: (KINDS.index(f.kind), f.line or 0)))
    known = {str(c.path) for c in checked_files}
    findings.extend(f for f in extra if f.file not in known)
    return checked_files, findings, link_stats
