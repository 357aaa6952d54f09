"""What an issue may point at: one scheme allow-list for every URL that reaches output, and
containment for every local file an issue names.

Every channel, the reader and the transports use these two rules and no other copy of them.
"""

from __future__ import annotations

import html
import os
import re
import stat
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
_HTTPS = re.compile(r"https://", re.I)


# Characters no output may carry: C0 controls but tab, newline and carriage return, DEL, the C1
# controls, lone surrogates, and the noncharacters U+FDD0–U+FDEF and U+xFFFE/U+xFFFF of every
# plane. XML 1.0 forbids the C0 controls, surrogates and U+FFFE/U+FFFF outright (feed.xml would
# not parse); HTML calls every one of them a parse error. The reader refuses them in a source with
# file:line; every rendition is checked once more (channels.base.Rendition), so configuration
# values and templates cannot slip one into output either.
_FORBIDDEN = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff"
    + "".join(f"{chr(p + 0xFFFE)}{chr(p + 0xFFFF)}" for p in range(0x10000, 0x110000, 0x10000)) + "]")


def forbidden_char(text: str) -> re.Match | None:
    """The first character of `text` that no output may carry (see _FORBIDDEN), or None."""
    return _FORBIDDEN.search(text)


def describe_char(ch: str) -> str:
    """`U+0008 (BACKSPACE)`-style name of a character for a message."""
    import unicodedata

    names = {0: "NUL", 8: "BACKSPACE", 0x0B: "VERTICAL TAB", 0x0C: "FORM FEED", 0x1B: "ESCAPE", 0x7F: "DELETE"}
    code = ord(ch)
    name = names.get(code) or unicodedata.name(ch, "")
    if not name:
        name = "lone surrogate" if 0xD800 <= code <= 0xDFFF else "control character or noncharacter"
    return f"U+{code:04X} ({name})"


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


def is_https(url: str) -> bool:
    """An encrypted web URL: `https://` (any case) — the one "is this https" rule (one-click
    unsubscribe, SNS certificates)."""
    return bool(_HTTPS.match(url))


def is_local(ref: str) -> bool:
    """A reference to a file beside the issue (not a URL, not an anchor)."""
    return bool(ref) and not is_remote(ref) and not ref.startswith(("#", "mailto:"))


def issue_folder(source: str | Path) -> Path:
    """The containment root of an issue file: the folder it is in as named (the issues folder as
    configured), never where a symlinked issue file points. Every local file the issue names must
    be inside it."""
    return Path(os.path.abspath(source)).parent


def contained(root: Path, ref: str) -> Path | None:
    """`ref` (relative to `root`) resolved after symlinks, if it stays inside `root`; else None.

    Absolute paths, `..` that climbs out (also %-escaped: a browser reads `%2e%2e/` as `../`),
    backslashes and symlinks pointing elsewhere all give None.
    """
    path = ref.split("#", 1)[0].split("?", 1)[0]  # a file name as the file system reads it
    for form in {path, urllib.parse.unquote(path)}:
        if not form or os.path.isabs(form) or form.startswith("~") or "\\" in form or "\x00" in form:
            return None
        if ".." in Path(form).parts and not (root.resolve() / form).resolve().is_relative_to(root.resolve()):
            return None
    root = root.resolve()
    target = (root / path).resolve()
    return target if target.is_relative_to(root) else None


# Local files an issue may have copied into published output: images, by name and by content.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"})


def _suffix(ref: str) -> str:
    return Path(ref.split("#", 1)[0].split("?", 1)[0]).suffix.lower()


def sniff(data: bytes) -> str | None:
    """The image format from its magic bytes: jpeg, png, gif, bmp, webp or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def image_bytes(path: Path, ref: str, *, file: str | None = None, line: int | None = None,
                head: int | None = None) -> bytes:
    """The bytes of the local image file `path` (named `ref` in the issue): a SourceError unless
    it is a regular file whose name ends in an image extension and whose content is a jpg, png,
    gif, webp or bmp — so nothing but images (no .env, database or config) reaches any output.
    `head`: read only that many bytes (enough to tell)."""

    if _suffix(ref) not in IMAGE_EXTENSIONS or Path(path).suffix.lower() not in IMAGE_EXTENSIONS:
        raise SourceError(f"image {excerpt(ref)} is not an image file: only {', '.join(sorted(IMAGE_EXTENSIONS))} "
                          "files are published; link other files by their URL", file=file, line=line,
                          code="not-an-image")
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or device would block or never end
            raise OSError(f"{path} is not a regular file")
        with open(path, "rb") as f:
            data = f.read() if head is None else f.read(head)
    except OSError as exc:
        raise SourceError(f"image {excerpt(ref)} cannot be read ({exc.strerror or exc}): put the image file "
                          "beside the issue or fix the path", file=file, line=line,
                          code="not-an-image") from None
    if sniff(data) is None:
        raise SourceError(f"image {excerpt(ref)} is named like an image but its content is not a jpg, png, gif, "
                          "webp or bmp: nothing else is published; replace the file", file=file, line=line,
                          code="not-an-image")
    return data


def check_local(root: Path, ref: str, *, file: str | None, line: int | None, what: str = "image") -> Path:
    """The contained path of a local image an issue names, else a SourceError saying what to do.
    Its name must end in an image extension, the file must be there, and be an image by content
    too (`image_bytes`)."""
    target = contained(root, ref)
    if target is None:
        raise SourceError(
            f"{what} {excerpt(ref)} points outside the issue's folder {root} (absolute path, '..' "
            "or a symlink to elsewhere); put the file in the issue's folder and name it relative to the issue",
            file=file,
            line=line,
            code="image-outside",
        )
    if _suffix(ref) in IMAGE_EXTENSIONS and not target.exists():
        raise SourceError(f"{what} {excerpt(ref)} not found (looked for {target}); put the file beside the issue "
                          "or fix the path", file=file, line=line, code="image-missing")
    image_bytes(target, ref, file=file, line=line, head=16)
    return target


def out_path(out_dir: Path, name: str, *, root: Path | None = None) -> Path:
    """Where `name` goes under `out_dir`, inside the output folder `root` (default: `out_dir`).

    Refused with a SourceError, before anything is written, when it would leave `root`: an
    absolute name, a `..` that climbs out, or a symbolic link anywhere between `root` and the file
    (a symlinked channel folder, subfolder or file would write through it to elsewhere). `root`
    itself may be a link: it is the folder the user named."""
    root = Path(os.path.abspath(root if root is not None else out_dir))
    where = Path(os.path.abspath(out_dir))
    path = name.split("#", 1)[0].split("?", 1)[0]
    if not where.is_relative_to(root) or not path or os.path.isabs(path) or path.startswith(("~", "\\")) \
            or "\x00" in path:
        raise SourceError(f"refusing to write {excerpt(name)} outside the output folder {root}")
    rel = os.path.normpath(os.path.join(where.relative_to(root), path))
    if rel == ".." or rel.startswith(".." + os.sep) or os.path.isabs(rel) or rel == ".":
        raise SourceError(f"refusing to write {excerpt(name)} outside the output folder {root}")
    target = root
    for part in Path(rel).parts:
        target = target / part
        if target.is_symlink():
            raise SourceError(
                f"refusing to write {excerpt(name)}: {target} is a symbolic link (to {os.readlink(target)}), "
                f"and writing through it could leave the output folder {root}; remove the link (the build "
                "recreates the folder) or choose another --out")
    return target
