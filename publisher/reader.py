"""Canonical source → Issue.

The source is the house style editors already write (GitHub-archive Markdown) with YAML front
matter for the metadata and without any footer. The block structure is line-oriented, so it is
parsed here line by line — which is also how every error gets its line number — and mistune
parses the inline Markdown and nested lists inside it.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import Diagnostic, SourceError
from .markdown import FOOTNOTE_REF, Converter, parse_blocks, parse_inline
from .model import (
    Block,
    Brief,
    Field,
    Footnote,
    Image,
    Issue,
    Item,
    License,
    Link,
    ListBlock,
    ListItem,
    MathBlock,
    Paragraph,
    Quote,
    Section,
    Text,
    plain_text,
)
from .patterns import (
    ARXIV_RE,
    FENCE_RE,
    FIELD_RE,
    FOOTER_RE,
    FULLWIDTH_LINK_RE,
    ITEM_RE,
    LEAD_COUNT_RE,
    LEAD_RE,
    LINK_NOTE_RE,
    LIST_LINE_RE,
    PREFIX_RE,
    REPO_RE,
    SOURCE_RE,
    SUMMARY_RE,
    TAGLINE_RE,
    TITLE_DATE_RE,
    UNCLOSED_LINK_RE,
)
from .refs import check_local, check_url, describe_char, excerpt, forbidden_char, is_local, issue_folder

FOOTNOTE_DEF_RE = re.compile(r"^\[\^([^\]\s^]{1,40})\]:\s*(.*)$")
TABLE_DELIMITER_RE = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")

FRONT_MATTER_KEYS = {
    "date": "the issue's date, YYYY-MM-DD",
    "number": "the issue number (an integer)",
    "status": "draft or ready",
    "publish_at": "when to publish, e.g. 2026-11-23T09:00:00+08:00",
    "topics": "list of topic keywords",
    "digest": "one-paragraph summary for WeChat and email previews",
    "cover": "cover image path (relative to the issue file) or URL",
    "author": "the author's name",
    "tagline": "the line under the title (default: the bold line in the body)",
    "license": "{name, url, badge} when this issue's license differs from [newsletter] license_*",
    "archived": "true when the issue was published before (imported): 往期回顾 lists it even as a draft",
}

# An issue file named by its date (settings.ISSUE_FILE_RE); its name and its date must agree.
FILE_DATE_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.md$")

# No source line is longer (the archive's longest is ~1,200 characters); Markdown fragments have
# their own bound (markdown.MAX_FRAGMENT), as mistune's inline parser is not linear.
MAX_LINE = 10_000

# Front matter is a handful of short keys; a bigger block is a mistake or an attack.
MAX_FRONT_MATTER = 16 * 1024


class _YamlLoader(yaml.SafeLoader):
    """Safe YAML without implicit timestamps: dates stay text and are validated here, so a
    bad date is our error with its line, not a crash inside the YAML library."""


_YamlLoader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _Match:
    """The groups of a title or heading line, as the regexes they replace gave them."""

    def __init__(self, *groups: str, **named: str):
        self._groups, self._named = groups, named

    def group(self, key):
        return self._named[key] if isinstance(key, str) else self._groups[key - 1]


def match_heading(s: str) -> _Match | None:
    """`## text ##` → ('##', 'text'): leading '#'s, text without the closing '#'s (linear)."""
    level = len(s) - len(s.lstrip("#"))
    if not level:
        return None
    return _Match(s[:level], s[level:].strip().rstrip("#").rstrip())


def match_title(text: str) -> _Match | None:
    """`brand (YYYY-MM-DD)：topics` → brand, date, topics (linear: one search, then slicing)."""
    m = TITLE_DATE_RE.search(text)
    if not m:
        return None
    topics = text[m.end():].lstrip()
    topics = topics[1:] if topics[:1] in ("：", ":") else topics
    return _Match(brand=text[: m.start()].strip(), date=m.group(1), topics=topics.strip())


def _refuse_references(raw: str, error) -> None:
    """Anchors, aliases and merge keys are refused before anything is built (no YAML bombs)."""
    previous = None
    for token in yaml.scan(raw, Loader=_YamlLoader):
        kind = type(token)
        if kind in (yaml.AnchorToken, yaml.AliasToken) or (
            kind is yaml.ScalarToken and token.value == "<<" and token.plain and previous is yaml.KeyToken
        ):
            what = {yaml.AnchorToken: "anchor '&'", yaml.AliasToken: "alias '*'"}.get(kind, "merge key '<<'")
            raise error(token.start_mark.line + 2, f"front matter uses a YAML {what}, which is refused: "
                        "write each value out in full")
        previous = kind


@dataclass
class ReadResult:
    issue: Issue
    warnings: list[Diagnostic] = field(default_factory=list)


# ---- the state each part's rules fill -----------------------------------------------------------


@dataclass
class _Preamble:
    """Title, tagline, 导读, notes and warm-up, read before the first section."""

    done: bool = False
    title_line: int = 0
    title: str = ""
    brand: str = ""
    title_date: dt.date | None = None
    topics: tuple[str, ...] = ()
    tagline: str = ""
    lead: list[Paragraph] = field(default_factory=list)
    warmup_intro: str = ""
    warmup: list[Brief] = field(default_factory=list)
    notes: list[Paragraph | Quote] = field(default_factory=list)


@dataclass
class _Body:
    done: bool = False
    sections: list[Section] = field(default_factory=list)


@dataclass
class _SectionState:
    name: str
    done: bool = False
    note: tuple = ()
    items: list[Item] = field(default_factory=list)
    closing: tuple[Block, ...] = ()
    loose: bool = False


@dataclass
class _ItemBody:
    rows: list[tuple[int, str]]  # (line, text) of the item's lines after its head
    done: bool = False
    fields: list[Field] = field(default_factory=list)
    summary: list[Block] = field(default_factory=list)
    label: int | None = None
    started: bool = False  # the summary has started: no more fields


class _Reader:
    def __init__(self, text: str, file: str, base: Path | None = None):
        self.file = file
        self.base = base  # the issue's folder: every local file it names must be inside it
        self.conv = Converter(file)
        self.warnings: list[Diagnostic] = []
        self.text = text
        self.lines = text.split("\n")

    # -- helpers ---------------------------------------------------------------------------

    def error(self, line: int, message: str, code: str | None = None) -> SourceError:
        return SourceError(message, file=self.file, line=line, code=code)

    def warn(self, line: int, message: str, code: str) -> None:
        self.warnings.append(Diagnostic("warning", message, self.file, line, code))

    def inline(self, text: str, line: int):
        return parse_inline(text, line=line, file=self.file, conv=self.conv)

    # -- front matter ----------------------------------------------------------------------

    def front_matter(self) -> tuple[dict, int]:
        """Parse the YAML front matter; return it and the index of the first body line."""
        if not self.lines or self.lines[0].strip() != "---":
            return {}, 0
        for end in range(1, len(self.lines)):
            if self.lines[end].strip() in ("---", "..."):
                break
        else:
            raise self.error(1, "front matter opened with '---' is never closed with '---'", "front-matter")
        raw = "\n".join(self.lines[1:end])
        if len(raw) > MAX_FRONT_MATTER:
            raise self.error(2, f"front matter is {len(raw):,} characters; at most {MAX_FRONT_MATTER:,} are read "
                             "(a few short 'key: value' lines): move text into the body", "front-matter")
        try:
            _refuse_references(raw, lambda line, message: self.error(line, message, "front-matter-reference"))
            data = yaml.load(raw, Loader=_YamlLoader) if raw.strip() else {}
        except (ValueError, TypeError) as exc:
            raise self.error(2, f"front matter cannot be read: {exc}", "front-matter") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = (mark.line + 2) if mark is not None else 1
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise self.error(line, f"front matter is not valid YAML: {problem}", "front-matter") from None
        if not isinstance(data, dict):
            raise self.error(2, "front matter must be 'key: value' lines", "front-matter")
        for key, value in data.items():
            bad = next((m for m in map(forbidden_char, _strings((key, value))) if m), None)
            if bad:
                raise self.error(self._key_line(str(key), end), f"front matter '{key}' holds the invisible character "
                                 f"{describe_char(bad.group(0))} (a YAML escape such as \\0, \\b or \\x08 in a "
                                 "quoted value), which feeds and web pages cannot carry: remove it", "control-character")
        for key in data:
            if key not in FRONT_MATTER_KEYS:
                line = self._key_line(str(key), end)
                hint = ""
                if key == "layout":
                    hint = " (a Jekyll key that the github channel writes; `publisher import` converts archive files)"
                known = ", ".join(FRONT_MATTER_KEYS)
                raise self.error(line, f"unknown front-matter key '{key}'{hint}; known keys: {known}", "unknown-key")
        data["_lines"] = {str(k): self._key_line(str(k), end) for k in data}
        return data, end + 1

    def _key_line(self, key: str, end: int) -> int:
        for i in range(1, end):
            if re.match(rf"^\s*['\"]?{re.escape(key)}['\"]?\s*:", self.lines[i]):
                return i + 1
        return 1

    # -- body: read by rules ---------------------------------------------------------------
    #
    # As mistune's block parser reads blocks, the body is read by rules: each construct of the
    # house style is one method `parse_<rule>(state, i)`, and each part of the issue runs its
    # ordered list of rules from line i. The first rule that returns a line index (not None)
    # has read the construct starting at line i and says where the next one starts; a rule
    # that ends the part sets `state.done`. To change how one construct reads, change its
    # method; to add a construct, add a method and put its name in the list.

    PREAMBLE_RULES = ("blank", "footer", "heading", "text_before_title", "quote", "tagline", "briefs",
                      "paragraph")
    BODY_RULES = ("blank", "footer", "section", "not_a_section")
    SECTION_RULES = ("blank", "section_end", "section_note", "link_note", "item", "summary_before_item",
                     "closing", "text_before_item")
    ITEM_BODY_RULES = ("item_blank", "item_code", "item_math", "item_table", "item_list", "item_quote",
                       "item_summary", "item_field", "item_text")

    def run(self, rules: tuple[str, ...], state, i: int, n: int) -> int:
        """Apply `rules` in order from line i until the part ends (state.done) or the text does."""
        methods = [getattr(self, "parse_" + name) for name in rules]
        while i < n and not state.done:
            for method in methods:
                nxt = method(state, i)
                if nxt is not None:
                    i = nxt
                    break
            else:  # pragma: no cover - every list ends with a rule that always reads or raises
                raise AssertionError(f"no rule of {rules} read line {i + 1}")
        return i

    def summary_before_item(self, ln: int, section: str | None = None) -> SourceError:
        """摘要 where no item is open: before the sections, or before a section's first item."""
        where = f" of section '{section}'" if section is not None else ""
        return self.error(ln, f"摘要 before any item{where}: a summary belongs under an item line '- [title](url)'",
                          "summary-before-item")

    def screen(self) -> None:
        """Before any rule runs: no line over MAX_LINE characters, and no character that an XML
        feed or an HTML page cannot carry (refs.forbidden_char) — the first one is an error with
        its line and column."""
        for k, raw in enumerate(self.lines):
            if len(raw) > MAX_LINE:
                raise self.error(k + 1, f"the line is {len(raw):,} characters long; at most {MAX_LINE:,} are read: "
                                 "split it (a blank line between paragraphs)", "line-too-long")
        m = forbidden_char(self.text)
        if m:
            line = self.text.count("\n", 0, m.start()) + 1
            column = m.start() - (self.text.rfind("\n", 0, m.start()) + 1) + 1
            raise self.error(line, f"column {column} holds the invisible character {describe_char(m.group(0))}, "
                             "which feeds and web pages cannot carry (often pasted from a PDF, a terminal or "
                             "a word processor): delete it", "control-character")

    def read(self) -> ReadResult:
        self.screen()
        meta, start = self.front_matter()
        definitions = self._footnote_definitions(start)
        pre = _Preamble()
        i = self.run(self.PREAMBLE_RULES, pre, start, len(self.lines))
        if not pre.title_line:
            raise self.error(1, "not an issue: no title line '# <newsletter> (YYYY-MM-DD)' found", "not-an-issue")
        body = _Body()
        self.run(self.BODY_RULES, body, i, len(self.lines))
        sections = body.sections
        if not sections:
            raise self.error(pre.title_line, "not an issue: it has no sections ('## 业界新闻', '## 论文' …)",
                             "no-sections")
        title_line, title, brand, title_date, topics = pre.title_line, pre.title, pre.brand, pre.title_date, pre.topics
        tagline, lead, warmup_intro, warmup, notes = pre.tagline, pre.lead, pre.warmup_intro, pre.warmup, pre.notes

        # ---- metadata ------------------------------------------------------------------------
        key_lines = meta.get("_lines", {})
        date = title_date
        if "date" in meta:
            fm_date = self._date(meta["date"], key_lines.get("date", 1), "front matter")
            if title_date and fm_date != title_date:
                raise self.error(
                    title_line,
                    f"the title's date {title_date} disagrees with the front matter date {fm_date} "
                    f"(line {key_lines.get('date', 1)}); make them the same",
                    "date-mismatch",
                )
            date = fm_date
        if date is None:
            raise self.error(title_line, "the issue has no date: put '(YYYY-MM-DD)' in the title or 'date:' in the front matter",
                             "no-date")
        named = FILE_DATE_RE.match(Path(self.file).name)
        if named and named.group(1) != date.isoformat():
            line = key_lines.get("date", title_line) if "date" in meta else title_line
            raise self.error(line, f"the file is named {Path(self.file).name} but the issue's date is {date}: every "
                             "output, the archive and the ledger go by the date, so one of them is wrong; rename the "
                             "file or fix the date", "date-file-mismatch")

        status = meta.get("status", "draft")
        if status not in ("draft", "ready"):
            raise self.error(key_lines.get("status", 1), f"status must be 'draft' or 'ready', not {excerpt(status)}", "invalid-value")
        publish_at = self._datetime(meta.get("publish_at"), key_lines.get("publish_at", 1))
        number = meta.get("number")
        if number is not None and (not isinstance(number, int) or isinstance(number, bool) or number < 1):
            raise self.error(key_lines.get("number", 1), f"number must be a positive integer, not {excerpt(number)}", "invalid-value")
        if "topics" in meta:
            fm_topics = meta["topics"]
            if isinstance(fm_topics, str):
                fm_topics = [t for t in re.split(r"[/／,，]", fm_topics)]
            if not isinstance(fm_topics, list) or not all(isinstance(t, str | int | float) for t in fm_topics):
                raise self.error(key_lines.get("topics", 1), "topics must be a list of keywords", "invalid-value")
            topics = tuple(str(t).strip() for t in fm_topics if str(t).strip())
        if "archived" in meta and not isinstance(meta["archived"], bool):
            raise self.error(key_lines.get("archived", 1), f"archived must be true or false, not {meta['archived']!r}", "invalid-value")
        for key in ("digest", "cover", "author", "tagline"):
            if key in meta and meta[key] is not None and not isinstance(meta[key], str):
                raise self.error(key_lines.get(key, 1), f"{key} must be text, not {excerpt(meta[key])}", "invalid-value")
        license = None
        if meta.get("license") is not None:
            lic = meta["license"]
            if not isinstance(lic, dict) or not {"name", "url"} <= set(lic) or set(lic) - {"name", "url", "badge"}:
                raise self.error(key_lines.get("license", 1), "license must have name and url (and optionally badge)", "invalid-value")
            for part in ("url", "badge"):
                if lic.get(part):
                    check_url(str(lic[part]), file=self.file, line=key_lines.get("license", 1), what=f"license {part}")
            license = License(str(lic["name"]), str(lic["url"]), str(lic.get("badge") or ""))
        if meta.get("cover"):
            check_url(meta["cover"], file=self.file, line=key_lines.get("cover", 1), what="cover")
            if self.base is not None and is_local(meta["cover"]):
                check_local(self.base, meta["cover"], file=self.file, line=key_lines.get("cover", 1), what="cover")

        issue = Issue(
            date=date,
            title=title,
            brand=brand,
            topics=topics,
            number=number,
            tagline=meta.get("tagline") or tagline,
            lead=tuple(lead),
            warmup_intro=warmup_intro,
            warmup=tuple(warmup),
            notes=tuple(notes),
            sections=tuple(sections),
            footnotes=self._footnotes(definitions),
            status=status,
            archived=bool(meta.get("archived", False)),
            publish_at=publish_at,
            cover=meta.get("cover") or None,
            digest=(meta.get("digest") or "").strip() or None,
            author=meta.get("author") or None,
            license=license,
            source_path=self.file,
        )
        self._lint(issue)
        self._check_formulas()
        if self.base is not None:
            for node, line, _ in _links_with_lines(issue):
                if isinstance(node, Image) and is_local(node.src):
                    check_local(self.base, node.src, file=self.file, line=line)
        for line, message, code in self.conv.warnings:
            self.warn(line, message, code)
        self.warnings.sort(key=lambda d: d.line or 0)
        return ReadResult(issue, self.warnings)

    # -- footnotes and formulas --------------------------------------------------------------

    def _footnote_definitions(self, start: int) -> dict[str, tuple[int, str]]:
        """`[^label]: text` lines (GFM footnote definitions, with indented continuation lines),
        taken out of the text before it is read (their lines are left blank, so every other line
        keeps its number): label -> (line, text)."""
        found: dict[str, tuple[int, str]] = {}
        lines, fence, i = self.lines, None, start
        while i < len(lines):
            raw = lines[i]
            fm = FENCE_RE.match(raw)
            if fence or fm:
                fence = None if fence and raw.strip().startswith(fence) else (fence or fm.group(1))
                i += 1
                continue
            m = FOOTNOTE_DEF_RE.match(raw)
            if not m:
                i += 1
                continue
            label, text, ln = m.group(1), [m.group(2).strip()], i + 1
            if label in found:
                raise self.error(ln, f"footnote [^{label}] is defined twice (first on line {found[label][0]}): "
                                 "give each note its own label", "footnote-twice")
            lines[i] = ""
            i += 1
            while i < len(lines) and lines[i][:1] in (" ", "\t") and lines[i].strip():
                text.append(lines[i].strip())
                lines[i] = ""
                i += 1
            found[label] = (ln, " ".join(t for t in text if t))
        return found

    def _footnotes(self, definitions: dict[str, tuple[int, str]]) -> tuple[Footnote, ...]:
        used = dict(self.conv.footnotes)
        for label, (_number, line) in used.items():
            if label not in definitions:
                raise self.error(line, f"footnote [^{label}] is used but never defined: add a line "
                                 f"'[^{label}]: …' at the end of the issue", "footnote-undefined")
        notes = []
        for label, (line, text) in definitions.items():
            if label not in used:
                self.warn(line, f"footnote [^{label}] is defined but never used; it is left out", "footnote-unused")
                continue
            if not text:
                raise self.error(line, f"footnote [^{label}] has no text", "footnote-empty")
            if FOOTNOTE_REF.search(text):
                raise self.error(line, f"footnote [^{label}] refers to another footnote: notes cannot nest",
                                 "footnote-nested")
            notes.append(Footnote(label, used[label][0], self.inline(text, line), line))
        return tuple(sorted(notes, key=lambda n: n.number))

    def _check_formulas(self) -> None:
        """Every formula must render (publisher/formulas.py): a malformed one is an error here,
        with its line, instead of a broken image in one channel."""
        if not self.conv.formulas:
            return
        from . import formulas

        for tex, line in self.conv.formulas:
            problem = formulas.problem(tex)
            if problem:
                raise self.error(line, f"formula ${tex[:60]}$ cannot be rendered: {problem}", "formula")

    def _footer_error(self, ln: int) -> SourceError:
        return self.error(
            ln,
            "footer (往期回顾, QR code, license) found: channels add their own footer, so a source "
            f"ends with its last item; remove line {ln} and everything after it "
            "(`publisher import` does this for archive files)",
            "footer",
        )

    def _date(self, value, line: int, where: str) -> dt.date:
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        try:
            y, m, d = (int(p) for p in str(value).strip().split("-"))
            return dt.date(y, m, d)
        except (ValueError, TypeError):
            raise self.error(line, f"invalid date {excerpt(str(value))} in the {where}: use a real date, YYYY-MM-DD",
                             "invalid-date") from None

    def _datetime(self, value, line: int) -> dt.datetime | None:
        if value is None:
            return None
        if isinstance(value, dt.datetime):
            return value
        if isinstance(value, dt.date):
            raise self.error(line, "publish_at needs a time too, e.g. 2026-11-23T09:00:00+08:00", "invalid-value")
        try:
            return dt.datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise self.error(
                line, f"invalid publish_at {excerpt(value)}: use ISO 8601, e.g. 2026-11-23T09:00:00+08:00",
                "invalid-value",
            ) from None

    def _quote_block(self, i: int) -> tuple[list[tuple[int, str]], int]:
        """A '>' block with its lazy continuation lines, as (line, text) per source line."""
        out: list[tuple[int, str]] = []
        lines = self.lines
        while i < len(lines):
            raw = lines[i]
            s = raw.strip()
            if not s:
                break
            if s.startswith(">"):
                out.append((i + 1, s[1:].strip()))
            elif out and not (s.startswith("#") or ITEM_RE.match(raw) or FOOTER_RE.match(s)):
                out.append((i + 1, s))  # lazy continuation, as editors write multi-line 导读
            else:
                break
            i += 1
        return out, i

    def _briefs(self, i: int) -> tuple[list[Brief], int]:
        """Warm-up bullets; a bullet's continuation lines are part of its paragraph (a newline a
        soft break, a trailing backslash a hard one), as Markdown reads them."""
        lines = self.lines
        briefs: list[Brief] = []
        runs: list[tuple[int, list[str]]] = []
        while i < len(lines):
            raw = lines[i]
            s = raw.strip()
            if not s:
                # the list ends at a blank line unless another bullet follows it
                j = i + 1
                while j < len(lines) and not lines[j].strip():
                    j += 1
                if j < len(lines) and ITEM_RE.match(lines[j]):
                    i = j
                    continue
                break
            m = ITEM_RE.match(raw)
            if m:
                text, ln = m.group(1).strip(), i + 1
                if not text:
                    raise self.error(ln, "empty warm-up bullet", "empty-brief")
                runs.append((ln, [text]))
            elif s.startswith((">", "#")) or FOOTER_RE.match(s):
                break
            elif runs:  # continuation of the previous brief
                runs[-1][1].append(s)
            else:
                break
            i += 1
        for ln, run in runs:
            briefs.append(Brief(self.inline("\n".join(run), ln), ln))
        return briefs, i

    # -- rules: the preamble (title, tagline, 导读, notes, warm-up) ---------------------------

    def parse_blank(self, st, i: int) -> int | None:
        return i + 1 if not self.lines[i].strip() else None

    def parse_footer(self, st, i: int) -> int | None:
        if FOOTER_RE.match(self.lines[i].strip()):
            raise self._footer_error(i + 1)
        return None

    def parse_heading(self, st: _Preamble, i: int) -> int | None:
        ln = i + 1
        h = match_heading(self.lines[i].strip())
        if not h:
            return None
        level, text = len(h.group(1)), h.group(2)
        if level == 1:
            if st.title_line:
                raise self.error(ln, f"a second title line; the title is already on line {st.title_line}",
                                 "title-twice")
            st.title_line, st.title = ln, text
            if not text:
                raise self.error(ln, "the title line '#' has no text", "title-empty")
            m = match_title(text)
            if m:
                st.brand = m.group("brand").strip()
                st.title_date = self._date(m.group("date"), ln, "title")
                st.topics = tuple(t.strip() for t in re.split(r"[/／]", m.group("topics")) if t.strip())
            else:
                st.brand = text
            return i + 1
        if level > 6 or (not st.title_line and level > 1 and re.search(r"\d{4}-\d{1,2}-\d{1,2}", text)):
            raise self.error(
                ln,
                f"malformed title line: it starts with {level} '#'"
                + (" (more than 6 is not a heading at all)" if level > 6 else "")
                + f"; write it as '# {text}'",
                "title-malformed",
            )
        if level == 2:
            if not st.title_line:
                raise self.error(ln, "section before the title line: the issue starts with '# <title> (YYYY-MM-DD)'",
                                 "section-before-title")
            st.done = True  # the sections start
            return i
        raise self.error(ln, f"heading level {level} is not part of the issue format (use '## ' for sections)",
                         "heading-level")

    def parse_text_before_title(self, st: _Preamble, i: int) -> int | None:
        if not st.title_line:
            raise self.error(i + 1, "not an issue: expected the title line '# <newsletter> (YYYY-MM-DD)' before any text",
                             "not-an-issue")
        return None

    def parse_quote(self, st: _Preamble, i: int) -> int | None:
        """A quote: the 导读 (one paragraph a line), a link note (left out), or issue notes."""
        if not self.lines[i].strip().startswith(">"):
            return None
        ln = i + 1
        block, i = self._quote_block(i)
        lm = LEAD_RE.match(block[0][1])
        if lm:
            if st.lead:
                self.warn(ln, "a second 导读 block; it is added to the first", "second-lead")
            paras = [(block[0][0], lm.group(1))] + block[1:]
            st.lead.extend(Paragraph(self.inline(t, bl), bl) for bl, t in paras if t.strip())
        elif any(LINK_NOTE_RE.search(t) for _, t in block):
            self.link_note_warning(ln)
        else:
            st.notes.extend(Quote((Paragraph(self.inline(t, bl), bl),), bl) for bl, t in block if t.strip())
        return i

    def parse_tagline(self, st: _Preamble, i: int) -> int | None:
        bold = TAGLINE_RE.fullmatch(self.lines[i].strip())
        if bold and not st.tagline and not st.lead and not st.warmup:
            st.tagline = bold.group(1).strip()
            return i + 1
        return None

    def parse_briefs(self, st: _Preamble, i: int) -> int | None:
        raw = self.lines[i]
        if ITEM_RE.match(raw) or raw.startswith("–"):
            briefs, i = self._briefs(i)
            st.warmup.extend(briefs)
            return i
        return None

    def parse_paragraph(self, st: _Preamble, i: int) -> int | None:
        """A plain line: the warm-up's intro when a list follows it, else a note."""
        s, ln = self.lines[i].strip(), i + 1
        if SUMMARY_RE.match(s):
            raise self.summary_before_item(ln)
        j = i + 1
        while j < len(self.lines) and not self.lines[j].strip():
            j += 1
        if j < len(self.lines) and ITEM_RE.match(self.lines[j]) and not st.warmup:
            st.warmup_intro = s
        else:
            st.notes.append(Paragraph(self.inline(s, ln), ln))
        return i + 1

    # -- rules: the sections -----------------------------------------------------------------

    def parse_section(self, st: _Body, i: int) -> int | None:
        h = match_heading(self.lines[i].strip())
        if not h or len(h.group(1)) != 2:
            return None
        section, i = self._section(i, h.group(2))
        st.sections.append(section)
        return i

    def parse_not_a_section(self, st: _Body, i: int) -> int | None:
        raise self.error(i + 1, "expected a section heading '## <name>'", "expected-section")

    def parse_section_end(self, st: _SectionState, i: int) -> int | None:
        s = self.lines[i].strip()
        if s.startswith("#") or FOOTER_RE.match(s):
            st.done = True
            return i
        return None

    def parse_section_note(self, st: _SectionState, i: int) -> int | None:
        if not self.lines[i].strip().startswith(">") or st.items:
            return None
        ln = i + 1
        block, i = self._quote_block(i)
        if any(LINK_NOTE_RE.search(t) for _, t in block):
            self.link_note_warning(ln)
            return i
        st.note = st.note + self.inline(" ".join(t for _, t in block), ln)
        return i

    def parse_link_note(self, st, i: int) -> int | None:
        s = self.lines[i].strip()
        if s.startswith(">") and LINK_NOTE_RE.search(s):
            self.link_note_warning(i + 1)
            _, i = self._quote_block(i)
            return i
        return None

    def parse_item(self, st: _SectionState, i: int) -> int | None:
        m = ITEM_RE.match(self.lines[i])
        if not m:
            return None
        item, i = self._item(i, m.group(1))
        st.items.append(item)
        if i < len(self.lines) and not self.lines[i - 1].strip() and ITEM_RE.match(self.lines[i]):
            st.loose = True  # a blank line between two items: a loose list, as GitHub shows it
        return i

    def parse_summary_before_item(self, st: _SectionState, i: int) -> int | None:
        if SUMMARY_RE.match(self.lines[i].strip()):
            raise self.summary_before_item(i + 1, st.name)
        return None

    def parse_closing(self, st: _SectionState, i: int) -> int | None:
        if not st.items:
            return None
        st.closing, i = self._closing(i)
        st.done = True
        return i

    def parse_text_before_item(self, st: _SectionState, i: int) -> int | None:
        raise self.error(i + 1, f"text before the first item of section '{st.name}': items start with '- '",
                         "text-before-item")

    def link_note_warning(self, ln: int) -> None:
        self.warn(ln, "the link note (阅读原文/项目链接) is added by each channel; this one is left out", "link-note")

    def _section(self, i: int, heading: str) -> tuple[Section, int]:
        head_line = i + 1
        name = plain_text(self.inline(heading, head_line)).strip()
        if not name:
            raise self.error(head_line, "section heading '##' has no name", "section-no-name")
        st = _SectionState(name)
        i = self.run(self.SECTION_RULES, st, i + 1, len(self.lines))
        return Section(name=name, items=tuple(st.items), note=st.note, line=head_line, closing=st.closing,
                       loose=st.loose), i

    def _closing(self, i: int) -> tuple[tuple[Block, ...], int]:
        """A section's closing text: everything after its last item up to the next heading,
        read as Markdown blocks (paragraphs, lists) — what GitHub shows after the item list."""
        lines = self.lines
        run: list[str] = []
        first = i + 1
        while i < len(lines):
            s = lines[i].strip()
            if s.startswith("#") or FOOTER_RE.match(s):
                break
            if s.startswith(">") and LINK_NOTE_RE.search(s):
                self.link_note_warning(i + 1)
                _, i = self._quote_block(i)
                continue
            run.append(lines[i])
            i += 1
        while run and not run[-1].strip():
            run.pop()
        return parse_blocks(run, first_line=first, file=self.file, conv=self.conv), i

    # -- items -----------------------------------------------------------------------------

    def _item(self, i: int, head: str) -> tuple[Item, int]:
        ln = i + 1
        item = self._item_head(head.strip(), ln)
        # body: until the next item at column 0, a heading, or the footer
        body: list[tuple[int, str]] = []
        j = i + 1
        lines = self.lines
        fence: str | None = None
        while j < len(lines):
            raw = lines[j]
            s = raw.strip()
            if fence:  # inside a code block nothing ends the item
                if s.startswith(fence):
                    fence = None
                body.append((j + 1, raw))
                j += 1
                continue
            fm = FENCE_RE.match(raw)
            if fm:
                fence = fm.group(1)
                body.append((j + 1, raw))
                j += 1
                continue
            if s and (ITEM_RE.match(raw) or s.startswith("#") or FOOTER_RE.match(s)):
                break
            if s.startswith(">") and LINK_NOTE_RE.search(s) and not raw.startswith((" ", "\t")):
                break
            if s and body and not body[-1][1].strip() and self._starts_closing(raw):
                break  # free text after a blank line: the section's closing text, not this item's
            if body and UNCLOSED_LINK_RE.search(body[-1][1]) and s:
                # a link target broken across lines, `[text](https://…` then `)`: one line again
                body[-1] = (body[-1][0], body[-1][1].rstrip() + " " + s)
                j += 1
                continue
            body.append((j + 1, raw))
            j += 1
        fields, summary, label = self._item_body(body)
        return Item(**{**item, "fields": tuple(fields), "summary": tuple(summary), "summary_label": label}), j

    @staticmethod
    def _lazy(raw: str, run: list[str]) -> bool:
        """An unindented line right after a list line that starts no block of its own: it
        continues that list item's paragraph (CommonMark's lazy continuation, as GitHub shows
        it). A 摘要 line is the item's, never the list's."""
        s = raw.strip()
        return bool(run and run[-1].strip()) and not (
            FENCE_RE.match(raw) or s.startswith((">", "#")) or SUMMARY_RE.match(s) or ITEM_RE.match(raw)
        )

    @staticmethod
    def _starts_closing(raw: str) -> bool:
        """An unindented line after a blank line that is not part of an item's house style
        (摘要, a list, quote or code) ends the item list, as it does on GitHub. A line shaped like
        a field (`总结：如下：`) ends it too: GitHub shows it after the list, and a field after a
        blank line is no house style (the published archive has none)."""
        s = raw.strip()
        return not (
            raw[:1] in (" ", "\t")
            or SUMMARY_RE.match(s)
            or LIST_LINE_RE.match(raw)
            or FENCE_RE.match(raw)
            or s.startswith(">")
            or s.startswith("!")
            or s.startswith(("|", "$$"))  # a table or a displayed formula of the item's summary
        )

    def _item_head(self, head: str, ln: int) -> dict:
        bad = FULLWIDTH_LINK_RE.search(head)
        if bad:
            raise self.error(ln, f"item link written with full-width brackets {excerpt(bad.group(0), 40)}: Markdown "
                             "reads no link there, so the title would be published as bracketed text; write "
                             "'- [title | source](url)' with ASCII [ ] and ( )", "fullwidth-link")
        arxiv = venue = None
        rest = head
        while True:
            m = PREFIX_RE.match(rest)
            if not m:
                break
            p = m.group(1).strip()
            if ARXIV_RE.match(p) and arxiv is None:
                arxiv = p
            elif venue is None and not ARXIV_RE.match(p):
                venue = p
            else:
                break
            rest = rest[m.end():]
        nodes = self.inline(rest, ln)
        url: str | None = None
        if nodes and isinstance(nodes[0], Link):
            title_nodes, url, extra = nodes[0].children, nodes[0].url, nodes[1:]
        else:
            k = next((x for x, nd in enumerate(nodes) if isinstance(nd, Link)), len(nodes))
            title_nodes, extra = nodes[:k], nodes[k:]
        if not extra or all(isinstance(e, Text) and not e.text.strip() for e in extra):
            extra = ()
        title = plain_text(title_nodes).strip()
        if not title:
            if url:
                raise self.error(ln, f"item has no title text: '[]({url})' — write the title inside the brackets",
                                 "item-no-title")
            raise self.error(ln, "item has no title text: write '- [title | source](url)'", "item-no-title")
        source = None
        sm = SOURCE_RE.match(title)
        if sm:
            title, source = sm.group("title").strip(), sm.group("source").strip()
        repo = None
        rm = REPO_RE.match(title)
        if rm:
            repo, title = rm.group(1), rm.group(2).strip()
        title_inlines = self._title_inlines(tuple(title_nodes), repo, source, ln)
        return dict(title=title, url=url, source=source, arxiv=arxiv, venue=venue, repo=repo,
                    extra=tuple(extra), title_inlines=title_inlines, line=ln)

    def _title_inlines(self, nodes: tuple, repo: str | None, source: str | None, ln: int) -> tuple:
        """The title's inline nodes without `repo: ` and ` | source` when it has markup
        (`**NVIDIA**`); () for a plain-text title."""
        if all(isinstance(n, Text) for n in nodes):
            return ()
        rich = list(nodes)
        if source:
            last = rich[-1]
            m = re.search(r"\s*[|｜]\s*[^|｜]*$", last.text) if isinstance(last, Text) else None
            if m is None:
                self.warn(ln, "markup around the ' | source' part of an item title is dropped; the title is kept as text",
                          "title-markup-dropped")
                return ()
            rich[-1] = Text(last.text[: m.start()])
        if repo:
            first = rich[0]
            m = re.match(r"^\s*" + re.escape(repo) + r"\s*[:：]\s*", first.text) if isinstance(first, Text) else None
            if m is None:
                self.warn(ln, "markup around the 'owner/repo:' part of an item title is dropped; the title is kept as text",
                          "title-markup-dropped")
                return ()
            rich[0] = Text(first.text[m.end():])
        if rich and isinstance(rich[0], Text):
            rich[0] = Text(rich[0].text.lstrip())
        if rich and isinstance(rich[-1], Text):
            rich[-1] = Text(rich[-1].text.rstrip())
        return tuple(n for n in rich if not (isinstance(n, Text) and not n.text))

    # -- rules: an item's body (fields, then the summary) --------------------------------------

    def _item_body(self, body: list[tuple[int, str]]) -> tuple[list[Field], list[Block], int | None]:
        """Fields, summary blocks, and where the 摘要 label stood (None: the item has none)."""
        st = _ItemBody(body)
        self.run(self.ITEM_BODY_RULES, st, 0, len(body))
        return st.fields, st.summary, st.label

    def parse_item_blank(self, st: _ItemBody, k: int) -> int | None:
        return k + 1 if not st.rows[k][1].strip() else None

    def parse_item_code(self, st: _ItemBody, k: int) -> int | None:
        ln, raw = st.rows[k]
        fm = FENCE_RE.match(raw)
        if not fm:
            return None
        fence = fm.group(1)
        run = [raw]
        k += 1
        closed = False
        while k < len(st.rows):
            run.append(st.rows[k][1])
            k += 1
            if run[-1].strip().startswith(fence):
                closed = True
                break
        if not closed:
            raise self.error(ln, f"code block opened with {fence} is never closed", "code-unclosed")
        st.summary.extend(parse_blocks(run, first_line=ln, file=self.file, conv=self.conv))
        st.started = True
        return k

    def parse_item_math(self, st: _ItemBody, k: int) -> int | None:
        """`$$` on a line of its own opens a displayed formula that a `$$` line closes (or
        `$$ … $$` on one line)."""
        ln, raw = st.rows[k]
        s = raw.strip()
        if not s.startswith("$$"):
            return None
        if len(s) > 4 and s.endswith("$$"):
            tex, k = s[2:-2], k + 1
        elif s == "$$":
            run, k = [], k + 1
            while k < len(st.rows) and st.rows[k][1].strip() != "$$":
                run.append(st.rows[k][1])
                k += 1
            if k == len(st.rows):
                raise self.error(ln, "displayed formula opened with $$ is never closed: end it with a line '$$'",
                                 "formula-unclosed")
            tex, k = "\n".join(run), k + 1
        else:
            return None  # `$$x$$ and more` is a paragraph with a displayed formula in it
        st.summary.append(MathBlock(self.conv.formula(tex, ln), ln))
        st.started = True
        return k

    def parse_item_table(self, st: _ItemBody, k: int) -> int | None:
        """A GFM table: a `|` line followed by its delimiter row, and the `|` lines after them."""
        ln, raw = st.rows[k]
        if not (raw.lstrip().startswith("|") and k + 1 < len(st.rows) and TABLE_DELIMITER_RE.match(st.rows[k + 1][1])):
            return None
        run = [raw.strip()]
        k += 1
        while k < len(st.rows) and st.rows[k][1].lstrip().startswith("|"):
            run.append(st.rows[k][1].strip())
            k += 1
        st.summary.extend(parse_blocks(run, first_line=ln, file=self.file, conv=self.conv))
        st.started = True
        return k

    def parse_item_list(self, st: _ItemBody, k: int) -> int | None:
        ln, raw = st.rows[k]
        body = st.rows
        if not (LIST_LINE_RE.match(raw) or (raw[:1] in (" ", "\t") and st.summary
                                            and isinstance(st.summary[-1], ListBlock))):
            return None
        run: list[str] = []
        while k < len(body):
            r = body[k][1]
            if not r.strip():
                # blank: the list goes on only if an indented/list line follows
                nxt = next((b for b in body[k + 1:] if b[1].strip()), None)
                if nxt and (LIST_LINE_RE.match(nxt[1]) or nxt[1][:1] in (" ", "\t")):
                    run.append("")
                    k += 1
                    continue
                break
            if not (LIST_LINE_RE.match(r) or r[:1] in (" ", "\t") or self._lazy(r, run)):
                break
            run.append(r.replace("–", "-", 1) if r.lstrip().startswith("–") else r)
            k += 1
        st.summary.extend(parse_blocks(run, first_line=ln, file=self.file, conv=self.conv))
        st.started = True
        return k

    def parse_item_quote(self, st: _ItemBody, k: int) -> int | None:
        ln, raw = st.rows[k]
        s = raw.strip()
        if not s.startswith(">"):
            return None
        q = [s[1:].strip()]
        k += 1
        while k < len(st.rows) and st.rows[k][1].strip().startswith(">"):
            q.append(st.rows[k][1].strip()[1:].strip())
            k += 1
        st.summary.append(Quote(tuple(Paragraph(self.inline(t, ln), ln) for t in q if t), ln))
        st.started = True
        return k

    def parse_item_summary(self, st: _ItemBody, k: int) -> int | None:
        ln, raw = st.rows[k]
        sm = SUMMARY_RE.match(raw.strip())
        if not sm or st.label is not None:
            return None  # a second 摘要： stays as written (item_text)
        st.started = True
        st.label = len(st.summary)
        if sm.group(1).strip():
            st.summary.append(Paragraph(self.inline(sm.group(1).strip(), ln), ln))
        return k + 1

    def parse_item_field(self, st: _ItemBody, k: int) -> int | None:
        ln, raw = st.rows[k]
        fm = FIELD_RE.match(raw.strip())
        if not fm or st.started:
            return None
        st.fields.append(Field(fm.group("label"), self.inline(fm.group("value").strip(), ln), ln))
        return k + 1

    def parse_item_text(self, st: _ItemBody, k: int) -> int | None:
        ln, raw = st.rows[k]
        st.summary.append(Paragraph(self.inline(raw.strip(), ln), ln))
        st.started = True
        return k + 1

    # -- warnings about the whole issue ----------------------------------------------------

    def _lint(self, issue: Issue) -> None:
        if issue.lead:
            text = plain_text(issue.lead[0].children)
            m = LEAD_COUNT_RE.search(text)
            if m and int(m.group(1)) != issue.item_count:
                self.warn(
                    issue.lead[0].line,
                    f"the 导读 says {m.group(0)} but the sections hold {issue.item_count} items",
                    "lead-count",
                )
        # An item repeating its own URL (title link and 链接：) is house style; the same URL in two
        # different items or briefs is a story that runs twice.
        seen: dict[str, tuple[int, int]] = {}
        for url, line, scope in _urls_with_lines(issue):
            key = url.rstrip("/")
            if key in seen and seen[key][1] != scope:
                self.warn(line, f"the same URL appears twice in this issue (first on line {seen[key][0]}): {url}",
                          "duplicate-url")
            else:
                seen.setdefault(key, (line, scope))


def _strings(value):
    """Every string in a YAML value (keys, lists and mappings at any depth)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def _urls_with_lines(issue: Issue):
    """(url, line, scope) for every link in the issue, in document order; scope numbers the
    item, brief or paragraph the link belongs to."""
    for node, line, scope in _links_with_lines(issue):
        yield (node if isinstance(node, str) else _target(node)), line, scope


def _links_with_lines(issue: Issue):
    """(Link or Image node — or an item's URL — , line, scope) for every link in the issue."""
    from .model import iter_links

    def walk_blocks(blocks, fallback):
        for b in blocks:
            if isinstance(b, Paragraph):
                for link in iter_links(b.children):
                    yield link, b.line or fallback
            elif isinstance(b, ListBlock):
                for it in b.items:
                    yield from walk_blocks(it.blocks, it.line or b.line)
            elif isinstance(b, ListItem | Quote):
                yield from walk_blocks(b.blocks, b.line or fallback)

    scope = 0
    for para in issue.lead + issue.notes:
        scope += 1
        for url, line in walk_blocks((para,), 1):
            yield url, line, scope
    for brief in issue.warmup:
        scope += 1
        for link in iter_links(brief.content):
            yield link, brief.line, scope
    for section in issue.sections:
        scope += 1
        for link in iter_links(section.note):
            yield link, section.line, scope
        for item in section.items:
            scope += 1
            if item.url:
                yield item.url, item.line, scope
            for link in iter_links(item.extra):
                yield link, item.line, scope
            for f in item.fields:
                for link in iter_links(f.value):
                    yield link, f.line, scope
            for url, line in walk_blocks(item.summary, item.line):
                yield url, line, scope


def _target(link) -> str:
    return getattr(link, "url", None) or getattr(link, "src", "")


def urls_with_lines(issue: Issue) -> list[tuple[str, int]]:
    """Every URL of an issue with the source line it is on (for checks and reports)."""
    return [(url, line) for url, line, _ in _urls_with_lines(issue)]


def decode(data: bytes, file: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SourceError(
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} cannot be decoded; "
            "save the file as UTF-8",
            file=file,
            line=line,
        ) from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise SourceError("not an issue: the file contains NUL bytes (a binary file?)", file=file, line=line)
    return text


def parse_issue(text: str, file: str = "<issue>", base: Path | None = None) -> ReadResult:
    """Parse canonical source text; raises SourceError (with file and line) on bad input.

    With `base` (the issue's folder), every local image and the cover must resolve inside it."""
    try:
        return _Reader(text, file, base).read()
    except SourceError:
        raise
    except RecursionError:
        raise SourceError("the Markdown nests too deeply to read", file=file, line=1) from None


def read_issue(path: str | Path) -> ReadResult:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SourceError("no such file", file=str(path)) from None
    except IsADirectoryError:
        raise SourceError("is a folder, not an issue file", file=str(path)) from None
    except OSError as exc:
        raise SourceError(f"cannot read: {exc.strerror}", file=str(path)) from None
    # the containment root is the folder the issue is in as named, never where a symlinked issue
    # file points (refs.issue_folder)
    return parse_issue(decode(data, str(path)), str(path), issue_folder(path))


__all__ = ["ReadResult", "parse_issue", "read_issue", "decode", "urls_with_lines", "FRONT_MATTER_KEYS"]
