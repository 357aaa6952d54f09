"""Click counting without tracking: signed redirect links (the pure part — no I/O, no store).

With `[analytics] clicks = true` the email channel rewrites every http(s) link of an issue to

    <base_url>/r/<issue>/<n>.<signature>

`n` numbers the issue's distinct link URLs in the order they first appear in the HTML part (1,
2, …); the signature is the first 16 bytes of HMAC-SHA256(secret, "click" NUL issue NUL n NUL url),
base64url. The link carries no reader identity: every reader of an issue gets the same URL for the
same story. `publisher serve` looks up the URL(s) recorded for (issue, n) when the issue was sent
(publisher/stores/analytics.py), recomputes the signature, and redirects only to the recorded URL
whose signature matches — a link can never send anyone elsewhere (publisher/report.py,
`redirect_app`).

What "replayed" means for a link that identifies nobody: following a genuine link again is a
genuine click and is counted again (a reader who clicks twice and two readers cannot be told
apart, by design). Refused with 400 and counted nowhere: a signature made for another issue,
another number or another URL (an altered path or a link edited since it was sent), one made with
another key (rotating [analytics] secret_env retires every link signed with the old one), one for
an issue whose links were never recorded (a `render` or `preview` copy), and anything malformed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html as htmlmod
import re

SIG_CHARS = 22  # 16 bytes of HMAC-SHA256, base64url without padding
ISSUE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
PATH_RE = re.compile(r"/r/(?P<issue>[A-Za-z0-9][A-Za-z0-9._-]{0,63})/(?P<n>[1-9][0-9]{0,5})\."
                     r"(?P<sig>[A-Za-z0-9_-]{22})")
MAX_URL = 2048
LABEL_CHARS = 200

_HREF = re.compile(r'(<a\b[^>]*?\bhref=")([^"]*)("[^>]*>)(.*?)</a>', re.S | re.I)
_TAG = re.compile(r"<[^>]+>")
_TEXT_URL = re.compile(r"https?://[^\s<>\"）)]+")


def signature(secret: str, issue: str, number: int, url: str) -> str:
    msg = f"click\0{issue}\0{number}\0{url}".encode()
    mac = hmac.new(secret.encode("utf-8"), msg, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def genuine(secret: str, issue: str, number: int, url: str, sig: str) -> bool:
    return hmac.compare_digest(signature(secret, issue, number, url), sig)


def redirect_url(base_url: str, secret: str, issue: str, number: int, url: str) -> str:
    return f"{base_url.rstrip('/')}/r/{issue}/{number}.{signature(secret, issue, number, url)}"


def countable(url: str) -> bool:
    """A link that may be rewritten: http(s), one line, no spaces or controls, bounded."""
    return (url.startswith(("https://", "http://")) and len(url) <= MAX_URL
            and not any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url))


def rewrite(html: str, text: str, issue: str, base_url: str, secret: str
            ) -> tuple[str, str, list[tuple[int, str, str]]]:
    """(html, text, links): every countable link of the HTML part replaced by its signed redirect,
    the same URLs in the text part likewise, and the numbered links (n, url, label) — the label is
    the text of the link's first anchor, for the report's most-read stories."""
    if not ISSUE_RE.fullmatch(issue):
        raise ValueError(f"issue slug {issue!r} cannot appear in a redirect path")
    numbers: dict[str, int] = {}
    links: list[tuple[int, str, str]] = []

    def number_of(url: str, label: str) -> int:
        if url not in numbers:
            numbers[url] = len(numbers) + 1
            links.append((numbers[url], url, label))
        return numbers[url]

    def swap(m: re.Match) -> str:
        url = htmlmod.unescape(m.group(2))
        if not countable(url):
            return m.group(0)
        label = " ".join(htmlmod.unescape(_TAG.sub(" ", m.group(4))).split())[:LABEL_CHARS]
        target = redirect_url(base_url, secret, issue, number_of(url, label or url), url)
        return f"{m.group(1)}{htmlmod.escape(target)}{m.group(3)}{m.group(4)}</a>"

    html = _HREF.sub(swap, html)

    def swap_text(m: re.Match) -> str:
        url = m.group(0)
        tail = ""
        while url and url not in numbers and url[-1] in ".,;:!?，。；：！？]>'":
            url, tail = url[:-1], url[-1] + tail
        if url not in numbers:
            return m.group(0)
        return redirect_url(base_url, secret, issue, numbers[url], url) + tail

    return html, _TEXT_URL.sub(swap_text, text), links


_BASE_RE = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~/%-]*)?")


def rewrite_for(settings, issue: str, html: str, text: str) -> tuple[str, str, list[tuple[int, str, str]]]:
    """`rewrite` with [analytics] base_url and the secret named by [analytics] secret_env (a
    ConfigError naming the key when either is missing or malformed)."""
    from publisher.errors import ConfigError

    base = settings.require("analytics", "base_url", "the public URL where `publisher serve` answers /r/ links")
    if not _BASE_RE.fullmatch(base):
        raise ConfigError(f"[analytics] base_url must be an http(s) URL without query or fragment, like "
                          f"https://news.example.org, got {base[:80]!r}: fix it in {settings.where()}")
    return rewrite(html, text, issue, base, settings.secret("analytics", "secret_env"))
