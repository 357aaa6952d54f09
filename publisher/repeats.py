"""Stories that already ran: items of an issue whose URL or title appeared in an earlier issue.

URLs are compared normalised (`normalise_url`): http/https and `www.` folded, default ports,
trailing slashes and fragments dropped, tracking parameters removed while the parameters that
name the content stay (WeChat's `__biz`/`mid`/`idx`/`sn`, `?id=`, `?v=` …), arXiv abs/pdf and
versions folded, GitHub paths case-folded.

Titles are compared normalised (`normalise_title`: NFKC, case-folded, punctuation, symbols and
spaces stripped) with difflib's ratio ≥ TITLE_RATIO. 0.9 is the brief's figure and it holds on the
corpus: the same story re-run differs in a character or two (a full-width colon, a trailing
version), while different stories of a series ("… v0.5.0" vs "… v0.6.0") are already below 0.9
once their titles are longer than about 20 characters; titles shorter than MIN_TITLE_CHARS only
match exactly, since two characters of difference on a short title is a different story.

The archive index reads each archive issue once and keeps it in memory, keyed by path, mtime
and size, so checking several issues (or checking again in one process) reads nothing twice.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from publisher.errors import SourceError
from publisher.linkcheck import checkable
from publisher.model import Issue, Item, Paragraph, iter_links, plain_text
from publisher.reader import read_issue
from publisher.settings import ISSUE_FILE_RE

TITLE_RATIO = 0.9
MIN_TITLE_CHARS = 12

# a summary paragraph that is only "label：URL"
REFERENCE_LINE_RE = re.compile(r"[^：:\n]{1,12}[：:]\s*https?://\S+")

# Query parameters that only say how a reader arrived, never what they read.
TRACKING_PARAMS = {
    "spm", "from", "scene", "chksm", "srcid", "sharer_sharetime", "sharer_shareid",
    "clicktime", "enterid", "share_token", "isappinstalled", "ref", "ref_src", "ref_url", "mpshare",
    "nsukey", "exportkey", "pass_ticket", "wx_header", "ascene", "devicetype", "lang",
    "abtest_cookie", "subscene", "sessionid", "fbclid", "gclid", "igshid", "si", "vd_source",
    "share_source", "share_medium", "share_plat", "share_from", "share_tag", "bbid", "ts", "timestamp",
    "sharesource", "mc_cid", "mc_eid", "_hsenc", "_hsmi", "poc_token", "rd2werd", "xtrack",
    "wxfrom", "winzoom", "utm", "feature", "s_r", "via",
}
# For these hosts, when any of the listed parameters is present, only they identify the content.
KEEP_ONLY = {
    "mp.weixin.qq.com": {"__biz", "mid", "idx", "sn"},
}
_ARXIV = re.compile(r"^/(?:abs|pdf)/(\d{4}\.\d{4,5}|[a-z\-]+/\d{7})(?:v\d+)?(?:\.pdf)?/?$", re.I)


def normalise_url(url: str) -> str:
    """A key under which the same page, however it was linked, compares equal."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return url.strip()
    host = (parts.hostname or "").lower().rstrip(".")
    if host.startswith("www."):
        host = host[4:]
    if host.startswith("m.") and host[2:] in ("zhihu.com", "bilibili.com"):
        host = host[2:]
    scheme = parts.scheme.lower()
    if port and not ((scheme == "http" and port == 80) or (scheme == "https" and port == 443)):
        host = f"{host}:{port}"
    path = parts.path or "/"
    path = re.sub(r"/{2,}", "/", path)
    if host == "arxiv.org":
        m = _ARXIV.match(path)
        if m:
            return f"arxiv.org/abs/{m.group(1).lower()}"
    if host == "github.com":
        path = path.lower().removesuffix(".git")
    path = path.rstrip("/") or "/"
    query = parse_qsl(parts.query, keep_blank_values=True)
    keep = KEEP_ONLY.get(host, set())
    if keep & {k for k, _ in query}:
        query = [(k, v) for k, v in query if k in keep]
    else:
        # e.g. Sogou's temporary WeChat links /s?timestamp=…&signature=…: the signature stays
        query = [(k, v) for k, v in query if not (k.lower().startswith("utm_") or k.lower() in TRACKING_PARAMS)]
    q = urlencode(sorted(query))
    return urlunsplit(("", host, path, q, "")).lstrip("/")


def identifies(url_key: str) -> bool:
    """False for keys that name a site rather than a story (a home page, WeChat's bare /s)."""
    host, _, rest = url_key.partition("/")
    return bool(rest.strip("/")) and rest not in ("s", "s/")


def normalise_title(title: str) -> str:
    """NFKC, case-folded, without punctuation, symbols or spaces."""
    text = unicodedata.normalize("NFKC", title).casefold()
    return "".join(ch for ch in text if unicodedata.category(ch)[0] not in "PSZC")


def item_title(item: Item) -> str:
    return f"{item.repo}: {item.title}" if item.repo else item.title


def _is_site(url_key: str) -> bool:
    """A repository or profile root (github.com/owner/repo): a project many stories link to."""
    host, _, rest = url_key.partition("/")
    return host in ("github.com", "gitee.com", "gitlab.com") and "?" not in rest and rest.count("/") <= 1


def item_links(item: Item) -> list[tuple[str, str, bool]]:
    """(url, normalised key, primary) for the links that identify an item: its own link and arXiv
    id (primary), and the links of its fields (论文/代码/链接 …) and of reference lines in its
    summary. Links inside the summary's prose are mentions, not the story, and are left out."""
    out: list[tuple[str, str, bool]] = []
    if item.url:
        out.append((item.url, normalise_url(item.url), True))
    if item.arxiv:
        url = f"https://arxiv.org/abs/{item.arxiv}"
        out.append((url, normalise_url(url), True))
    refs = [f.value for f in item.fields]
    # reference lines at the end of a summary ("论文链接：URL", "GitHub 项目：URL") are fields too
    refs += [b.children for b in item.summary
             if isinstance(b, Paragraph) and REFERENCE_LINE_RE.fullmatch(plain_text(b.children).strip())]
    for value in refs:
        for link in iter_links(value):
            url = getattr(link, "url", None)
            if url and checkable(url):
                out.append((url, normalise_url(url), False))
    seen: set[str] = set()
    unique = []
    for url, key, primary in out:
        if identifies(key) and key not in seen:
            seen.add(key)
            unique.append((url, key, primary))
    return unique


def title_numbers(title_key: str) -> list[str]:
    return re.findall(r"\d+", title_key)


@dataclass(frozen=True)
class Entry:
    date: dt.date
    file: str
    line: int
    title: str
    url: str | None
    links: tuple[tuple[str, str, bool], ...]
    title_key: str


@dataclass(frozen=True)
class Repeat:
    file: str | None
    line: int
    title: str
    url: str | None  # the link both share (by == "url")
    earlier: Entry
    by: str  # "url" or "title"
    ratio: float = 1.0

    @property
    def message(self) -> str:
        when = f"{self.earlier.date.isoformat()} ({self.earlier.file}:{self.earlier.line})"
        if self.by == "url":
            return f"this story already ran in the issue of {when}: same link {self.url}"
        how = "the same title" if self.ratio >= 1 else f"a title {self.ratio:.0%} alike"
        return f"this story already ran in the issue of {when}: {how} «{self.earlier.title}»"


def entries_of(issue: Issue, file: str) -> list[Entry]:
    out = []
    for item in issue.items:
        title = item_title(item)
        out.append(Entry(issue.date, file, item.line, title, item.url, tuple(item_links(item)),
                         normalise_title(title)))
    return out


_CACHE: dict[str, tuple[int, int, list[Entry] | None]] = {}


def _archive_entries(path: Path) -> list[Entry] | None:
    """The items of one archive issue (None when it cannot be read), cached by mtime and size."""
    st = path.stat()
    key = str(path.resolve())
    hit = _CACHE.get(key)
    if hit and hit[0] == st.st_mtime_ns and hit[1] == st.st_size:
        return hit[2]
    try:
        entries: list[Entry] | None = entries_of(read_issue(path).issue, str(path))
    except SourceError:
        entries = None
    _CACHE[key] = (st.st_mtime_ns, st.st_size, entries)
    return entries


class ArchiveIndex:
    """Every item of the issues folder, by normalised URL and by title."""

    def __init__(self, folder: Path | None):
        self.folder = folder
        self.entries: list[Entry] = []
        self.unreadable: list[Path] = []
        self.by_url: dict[str, list[tuple[Entry, bool]]] = {}
        self.by_title: dict[str, list[Entry]] = {}
        if folder is None or not folder.is_dir():
            return
        for path in sorted(folder.iterdir()):
            if not ISSUE_FILE_RE.match(path.name):
                continue
            entries = _archive_entries(path)
            if entries is None:
                self.unreadable.append(path)
                continue
            self.entries.extend(entries)
        # newest first, so the first earlier hit is the most recent run
        self.entries.sort(key=lambda e: (e.date, -e.line), reverse=True)
        for e in self.entries:
            for _, key, primary in e.links:
                self.by_url.setdefault(key, []).append((e, primary))
            self.by_title.setdefault(e.title_key, []).append(e)

    def find(self, issue: Issue, file: str | None = None) -> list[Repeat]:
        """Items of `issue` that ran in an issue dated before it."""
        out: list[Repeat] = []
        titles = [(k, v) for k, v in self.by_title.items() if k]
        matcher = difflib.SequenceMatcher(autojunk=False)
        for item in issue.items:
            title = item_title(item)
            hit = self._url_hit(item, issue.date)
            if hit:
                out.append(Repeat(file, item.line, title, hit[0], hit[1], "url"))
                continue
            key = normalise_title(title)
            if not key:
                continue
            exact = next((e for e in self.by_title.get(key, ()) if e.date < issue.date), None)
            if exact:
                out.append(Repeat(file, item.line, title, item.url, exact, "title"))
                continue
            if len(key) < MIN_TITLE_CHARS:
                continue
            best = _most_similar(key, titles, matcher, issue.date)
            if best:
                out.append(Repeat(file, item.line, title, item.url, best[1], "title", best[0]))
        return out

    def _url_hit(self, item, date) -> tuple[str, Entry] | None:
        """(url, the earlier entry) when one of the item's links ran before `date`."""
        for url, url_key, primary in item_links(item):
            for e, e_primary in self.by_url.get(url_key, ()):
                # a shared repository root counts only when it is one side's own link
                if e.date < date and (primary or e_primary or not _is_site(url_key)):
                    return url, e
        return None


def _most_similar(key: str, titles, matcher: difflib.SequenceMatcher, date) -> tuple[float, Entry] | None:
    """(ratio, entry) of the earlier title most like `key`, at least TITLE_RATIO alike."""
    best: tuple[float, Entry] | None = None
    matcher.set_seq2(key)
    numbers = title_numbers(key)
    for cand, entries in titles:
        n = len(cand)
        # ratio = 2M/(a+b) ≤ 2·min/(a+b): skip what cannot reach the threshold
        if n < MIN_TITLE_CHARS or 2 * min(n, len(key)) / (n + len(key)) < TITLE_RATIO:
            continue
        if title_numbers(cand) != numbers:  # v0.5.0 vs v0.6.0: another release
            continue
        matcher.set_seq1(cand)
        if matcher.real_quick_ratio() < TITLE_RATIO or matcher.quick_ratio() < TITLE_RATIO:
            continue
        ratio = matcher.ratio()
        if ratio < TITLE_RATIO or (best and ratio <= best[0]):
            continue
        earlier = next((e for e in entries if e.date < date), None)
        if earlier:
            best = (ratio, earlier)
    return best
