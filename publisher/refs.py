"""What an issue may point at: one scheme allow-list for every URL that reaches output, and
containment for every local file an issue names.

Every channel, the reader and the transports use these two rules and no other copy of them.
"""

from __future__ import annotations

import html
import os
import re
import urllib.parse
from pathlib import Path

from .errors import SourceError

# A target a reader can follow; anything else (javascript:, data:, vbscript:, file: …) is refused.
# Scheme-less targets (relative paths, anchors) are allowed: they are checked for containment.
SAFE_SCHEMES = frozenset({"http", "https", "mailto"})
_SCHEME = re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*):")
# Browsers ignore ASCII tab/newline and control characters inside a scheme: `java\tscript:`.
_CONTROL = re.compile(r"[\x00-\x20\x7f]+")
_REMOTE = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]*://")
_HTTP = re.compile(r"https?://", re.I)


def excerpt(value: object, limit: int = 60) -> str:
    """A value quoted for a message: at most `limit` characters, never the whole of a huge value."""
    text = value if isinstance(value, str) else repr(value)
    text = text if len(text) <= limit + 200 else text[: limit + 200]  # repr of a bomb stays bounded
    return repr(text[:limit] + "…") if len(text) > limit else repr(text)


def unsafe_scheme(url: str) -> str | None:
    """The refused scheme of `url` (lowercased), or None when it may reach a reader."""
    # Check what a browser might see: entities and %-escapes decoded, control characters gone.
    squashed = _CONTROL.sub("", urllib.parse.unquote(html.unescape(url[:2048])))
    m = _SCHEME.match(squashed)
    if m and m.group(1).lower() not in SAFE_SCHEMES:
        return m.group(1).lower()
    return None


def check_url(url: str, *, file: str | None, line: int | None, what: str = "link target") -> str:
    """Return the URL (stripped) if its scheme is allowed, else a SourceError naming the line."""
    scheme = unsafe_scheme(url)
    if scheme is not None:
        raise SourceError(
            f"{what} {excerpt(url)} uses the '{scheme}:' scheme, which is refused; use an http(s) URL",
            file=file,
            line=line,
        )
    return url.strip()


def safe_url(url: str) -> str:
    """A URL for output built from configuration or templates: itself if allowed, else ''."""
    return "" if unsafe_scheme(url) is not None else url


def is_remote(ref: str) -> bool:
    """A URL on another host: `scheme://…` or scheme-relative `//host/…` (the one rule)."""
    return bool(_REMOTE.match(ref)) or ref.startswith("//")


def is_http(url: str) -> bool:
    """A public web URL: `http://` or `https://` (any case) — the one "is this http(s)" rule."""
    return bool(_HTTP.match(url))


def is_local(ref: str) -> bool:
    """A reference to a file beside the issue (not a URL, not an anchor)."""
    return bool(ref) and not is_remote(ref) and not ref.startswith(("#", "mailto:"))


def contained(root: Path, ref: str) -> Path | None:
    """`ref` (relative to `root`) resolved after symlinks, if it stays inside `root`; else None.

    Absolute paths, `..` that climbs out and symlinks pointing elsewhere all give None.
    """
    path = ref.split("#", 1)[0].split("?", 1)[0]  # a file name as the file system reads it
    if not path or os.path.isabs(path) or path.startswith(("~", "\\")) or "\x00" in path:
        return None
    root = root.resolve()
    target = (root / path).resolve()
    return target if target.is_relative_to(root) else None


def check_local(root: Path, ref: str, *, file: str | None, line: int | None, what: str = "image") -> Path:
    """The contained path of a local file an issue names, else a SourceError saying what to do."""
    target = contained(root, ref)
    if target is None:
        raise SourceError(
            f"{what} {excerpt(ref)} points outside the issue's folder {root} (absolute path, '..' "
            "or a symlink to elsewhere); put the file in the issue's folder and name it relative to the issue",
            file=file,
            line=line,
        )
    return target


def out_path(out_dir: Path, name: str) -> Path:
    """Where `name` goes under `out_dir`; a ConfigError-free SourceError if it would leave it."""
    target = contained(out_dir, name)
    if target is None:
        raise SourceError(f"refusing to write {excerpt(name)} outside the output folder {out_dir}")
    return target
