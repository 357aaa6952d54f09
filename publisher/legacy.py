"""Legacy importer: GitHub-archive issues, exactly as published → canonical sources.

Works on the text, line by line, so everything the editor wrote survives as written; only the
archive's own conventions are taken out (Jekyll front matter, the footer, the link notes) and the
known quirks are mended, each with a warning. The result is then read by the canonical reader,
so an import that succeeds is a source every channel can render.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import atomic_write
from .errors import Diagnostic, SourceError
from .patterns import (
    ARCHIVE_FOOTER_RE,
    ARCHIVE_TITLE_DATE_RE,
    EMPTY_LINK_RE,
    EN_DASH_BULLET_RE,
    FIELD_LINE_RE,
    FONT_NOTE_RE,
    HARD_BREAK_RE,
    LINK_NOTE_RE,
    LIST_MARKER_RE,
    NEW_BLOCK_RE,
    SUMMARY_LINE_RE,
    SUMMARY_NO_COLON_RE,
)
from .reader import ReadResult, decode, parse_issue


@dataclass
class ImportResult:
    date: str
    text: str  # the canonical source
    read: ReadResult
    warnings: list[Diagnostic] = field(default_factory=list)


def import_legacy(data: bytes | str, file: str = "<legacy>") -> ImportResult:
    text = decode(data, file) if isinstance(data, bytes) else data.replace("\r\n", "\n")
    lines = text.split("\n")
    warnings: list[Diagnostic] = []

    def warn(line: int, msg: str, code: str) -> None:
        warnings.append(Diagnostic("warning", msg, file, line, code))

    start = _after_front_matter(lines, warn)
    license_lines = _license(lines, file, warn)
    out, hard, date = _mend_lines(lines, start, warn)
    if date is None:
        raise SourceError(
            "not an archive issue: no title line '# <newsletter> (YYYY-MM-DD)' found", file=file, line=1,
            code="not-an-issue",
        )
    body = _collapse_blanks(_join_soft_breaks(out, hard))
    status = _status(body, warn)
    # published in the archive: later issues list it in 往期回顾 even while it is a draft here
    header = ["---", f"date: {date}", f"status: {status}", "archived: true", *license_lines, "---", ""]
    canonical = "\n".join(header + [raw for _, raw in body]) + "\n"
    origin = [1] * len(header) + [ln for ln, _ in body]

    def back(line: int | None) -> int | None:  # a line of the canonical text → the archive's line
        return origin[line - 1] if line and line <= len(origin) else line

    try:
        read = parse_issue(canonical, file)
    except SourceError as exc:
        raise SourceError(exc.message, file=file, line=back(exc.line), code=exc.code) from None
    warnings.extend(Diagnostic(d.level, d.message, file, back(d.line), d.code) for d in read.warnings)
    warnings.sort(key=lambda d: d.line or 0)
    return ImportResult(date=date, text=canonical, read=read, warnings=warnings)


def _after_front_matter(lines: list[str], warn) -> int:
    """The index of the first line after the Jekyll front matter (0 without one)."""
    if not lines or lines[0].strip() != "---":
        return 0
    for j in range(1, len(lines)):
        if lines[j].strip() == "---":
            extra = [ln for ln in lines[1:j] if ln.strip() and not ln.strip().startswith("layout:")]
            if extra:
                warn(2, f"Jekyll front matter keys other than layout left out: {', '.join(e.split(':')[0] for e in extra)}",
                     "jekyll-front-matter")
            return j + 1
    return 0


def _mend_lines(lines: list[str], start: int, warn) -> tuple[list[tuple[int, str]], set[int], str | None]:
    """(original line number, text) for every line kept, the lines that end with a hard break (two
    spaces or a backslash), and the issue's date from its title line (None: not an issue)."""
    out: list[tuple[int, str]] = []
    hard: set[int] = set()
    date = None
    in_code = False
    for k in range(start, len(lines)):
        ln = k + 1
        raw = lines[k].rstrip().replace("\t", "    ")
        s = raw.strip()
        if s.startswith("```"):
            in_code = not in_code
        if in_code:
            out.append((ln, raw))
            continue
        if date is None and (title := _title(s, ln, warn)):
            date, heading = title
            out.append((ln, heading))
            continue
        if ARCHIVE_FOOTER_RE.match(s) and date is not None and _rest_is_footer(lines, k):
            break
        if (s.startswith(">") or FONT_NOTE_RE.match(s)) and LINK_NOTE_RE.search(s):
            continue  # the link note (阅读原文; in 2019 「PC端微信链接打不开」) is a channel convention
        out.append((ln, _mend(raw, s, ln, warn)))
        if HARD_BREAK_RE.search(lines[k]):
            hard.add(ln)
    return out, hard, date


def _title(s: str, ln: int, warn) -> tuple[str, str] | None:
    """(date, `# title`) when `s` is the archive's title line."""
    hashes = len(s) - len(s.lstrip("#"))
    m = ARCHIVE_TITLE_DATE_RE.search(s) if hashes else None
    if not m:
        return None
    title = s[hashes:].strip()
    if hashes != 1:
        warn(ln, f"title line started with {hashes} '#'; written as '# {title}'", "title-hashes")
    y, mo, d = (int(p) for p in m.group(1).split("-"))
    return f"{y:04d}-{mo:02d}-{d:02d}", f"# {title}"


def _mend(raw: str, s: str, ln: int, warn) -> str:
    """One line with the archive's known quirks mended, each with a warning."""
    fm = FONT_NOTE_RE.match(s)
    if fm:
        warn(ln, f"HTML <font> line turned into a note: > {fm.group(1).strip()}", "font-note")
        raw = f"> {fm.group(1).strip()}"
    if EN_DASH_BULLET_RE.match(raw) and not re.match(r"^\s*[–—]\s+\S+\s+[–—]", raw):
        warn(ln, "'–' used as a list bullet; written as '-'", "en-dash-bullet")
        raw = EN_DASH_BULLET_RE.sub(lambda m: m.group(1) + "- ", raw)
    sm = SUMMARY_NO_COLON_RE.match(raw)
    if sm:
        warn(ln, "'摘要' without a colon; written as '摘要：'", "summary-colon")
        raw = f"{sm.group(1)}摘要：{sm.group(2)}"
    if EMPTY_LINK_RE.search(raw):
        warn(ln, "empty link target '[…]()': the text is kept without a link", "empty-link")
        raw = EMPTY_LINK_RE.sub(lambda m: m.group(1), raw)
    return raw


def _collapse_blanks(out: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Runs of blank lines collapsed to one; no blank lines at the end."""
    body: list[tuple[int, str]] = []
    for ln, raw in out:
        if not raw.strip() and (not body or not body[-1][1].strip()):
            continue
        body.append((ln, raw))
    while body and not body[-1][1].strip():
        body.pop()
    return body


def _status(body: list[tuple[int, str]], warn) -> str:
    """An archive issue with an empty 导读 is a draft that was committed early (seed 001/004); one
    with no 导读 at all (the 2019 issues) cannot be published as it stands either."""
    empty_lead = any(re.fullmatch(r">\s*导读\s*[：:]?\s*", raw.strip()) for _, raw in body)
    no_lead = not any(re.match(r"^>\s*导读", raw.strip()) for _, raw in body)
    if empty_lead:
        warn(next(ln for ln, raw in body if "导读" in raw), "empty 导读: imported as status: draft", "empty-lead")
    elif no_lead:
        title_ln = next((ln for ln, raw in body if raw.startswith("# ")), 1)
        warn(title_ln, "no 导读: imported as status: draft (write a '> 导读：' line to make it ready)", "no-lead")
    return "draft" if empty_lead or no_lead else "ready"


LICENSE_RE = re.compile(
    r'<a rel="license" href="(?P<url>[^"]+)"><img alt="[^"]*" style="[^"]*" src="(?P<badge>[^"]+)" /></a>'
    r'<br />本作品采用<a rel="license" href="[^"]+">(?P<name>[^<]+)</a>进行许可'
)
DEFAULT_LICENSE_URL = "http://creativecommons.org/licenses/by-sa/4.0/"


def _license(lines: list[str], file: str, warn) -> list[str]:
    """Front-matter lines keeping the footer's license when it is not the usual CC BY-SA 4.0."""
    for k, raw in enumerate(lines):
        m = LICENSE_RE.search(raw)
        if m and m.group("url") != DEFAULT_LICENSE_URL:
            warn(k + 1, f"this issue was published under {m.group('name')}: kept as its license in the front matter",
                 "license")
            return ["license:", f"  name: {m.group('name')}", f"  url: {m.group('url')}",
                    f"  badge: {m.group('badge')}"]
    return []


def _join_soft_breaks(out: list[tuple[int, str]], hard: set[int]) -> list[tuple[int, str]]:
    """Line breaks as the archive meant them, in the canonical source's terms.

    GitHub read the archive as CommonMark: a line ending in two spaces is a hard break, any other
    line running on into the next is a soft break (one paragraph). The canonical source breaks
    some lines by house style — the 导读's lines, an item's head, field and summary lines — so
    there a soft-wrapped line is joined to the line it continues and a hard break needs nothing.
    Elsewhere (nested lists and their lazy lines, warm-up bullets, closing text) the source is
    Markdown: a hard break is kept, written as a visible backslash (two spaces after a bare URL,
    which an autolink would take the backslash into), and a soft break stays a newline. Head and
    field lines are never joined: each is a line of its own (GitHub ran them together)."""
    joined: list[tuple[int, str]] = []
    kinds: list[str] = []  # per joined line: head, field, summary, list, brief, quote, note, other
    flow = _Flow()
    for ln, raw in out:
        s = raw.strip()
        prev = joined[-1] if joined else None
        prev_kind = kinds[-1] if kinds else "blank"
        fence = s.startswith(("```", "~~~"))
        continues = (
            not flow.in_code and not fence and prev is not None and bool(s) and bool(prev[1].strip())
            and prev_kind not in ("code", "heading", "blank")
            and not NEW_BLOCK_RE.match(raw)
        )
        kind, continues = flow.kind(raw, s, fence, continues, prev_kind, kinds)
        if not continues or (kind in ("head", "brief", "field") and kind != prev_kind) or SUMMARY_LINE_RE.match(raw):
            joined.append((ln, raw))
            kinds.append(kind)
            continue
        if prev_kind in ("quote", "summary"):
            if prev[0] not in hard:  # soft: one line, as GitHub showed one paragraph
                text = s[1:].strip() if s.startswith(">") else s
                joined[-1] = (prev[0], prev[1].rstrip() + " " + text)
                if ln in hard:
                    hard.add(prev[0])
                else:
                    hard.discard(prev[0])
                continue
        elif prev_kind in ("list", "brief", "other") and prev[0] in hard:
            end = "  " if re.search(r"https?://\S+$", prev[1]) else "\\"
            joined[-1] = (prev[0], prev[1].rstrip() + end)
        joined.append((ln, raw))
        kinds.append(kind)
    return joined


@dataclass
class _Flow:
    """Where `_join_soft_breaks` is: in the sections, in an item (and past its field lines), in code."""

    in_sections: bool = False
    in_item: bool = False
    started: bool = False
    in_code: bool = False

    def kind(self, raw: str, s: str, fence: bool, continues: bool, prev_kind: str,
             kinds: list[str]) -> tuple[str, bool]:
        """The kind of this line, and whether it continues the line before it."""
        if self.in_code or fence:
            self.in_code = self.in_code != fence
            return "code", continues
        if not s:
            return "blank", continues
        if s.startswith("#"):
            if s.startswith("## "):
                self.in_sections, self.in_item = True, False
            return "heading", continues
        if s.startswith(">"):
            kind = "quote" if not self.in_sections else "note"
            return kind, (kind == "quote" and prev_kind == "quote")  # `> a` then `> b`: one paragraph
        if re.match(r"^[-*+]\s", raw):
            self.in_item, self.started = self.in_sections, False
            return ("head" if self.in_sections else "brief"), continues
        if continues and prev_kind not in ("head", "field"):
            return prev_kind, continues  # a lazy continuation line: part of what it continues
        if self.in_item:
            last_block = next((k for k in reversed(kinds) if k != "blank"), "blank")
            return self._item_line(raw, s, last_block), continues
        return "other", continues

    def _item_line(self, raw: str, s: str, last_block: str) -> str:
        if LIST_MARKER_RE.match(raw) or (raw[:1] in (" ", "\t") and last_block == "list"):
            self.started = True
            return "list"
        if SUMMARY_LINE_RE.match(raw):
            self.started = True
            return "summary"
        if not self.started and FIELD_LINE_RE.match(s):
            return "field"
        self.started = True
        return "summary"


def _rest_is_footer(lines: list[str], k: int) -> bool:
    """True when no section or item follows line k: what starts there is the archive's footer."""
    for raw in lines[k + 1:]:
        s = raw.strip()
        if re.match(r"^##\s+(?!\[?往期回顾)", s):
            return False
    return True


def import_file(path: str | Path, out_dir: str | Path, *, force: bool = False) -> tuple[Path, ImportResult]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read: {exc.strerror}", file=str(path)) from None
    result = import_legacy(data, str(path))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{result.date}.md"
    if target.exists() and not force and target.read_text(encoding="utf-8") != result.text:
        raise SourceError(
            f"{target} already exists and differs; pass --force to overwrite it", file=str(path)
        )
    atomic_write(target, result.text)
    return target, result
