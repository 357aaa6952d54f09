"""The system clipboard through the tool the desktop provides: wl-copy (Wayland), xclip or xsel
(X11), pbcopy (macOS). HTML goes on as `text/html` where the tool can say so (wl-copy, xclip);
xsel and pbcopy take plain text only, which the tool's name in the message makes visible."""

from __future__ import annotations

import os
import shutil
import subprocess

from publisher.errors import PublisherError


class ClipboardError(PublisherError):
    """No clipboard tool, or it failed."""


def _commands(media_type: str) -> list[tuple[str, list[str]]]:
    html = media_type == "text/html"
    wayland = bool(os.environ.get("WAYLAND_DISPLAY"))
    candidates = [
        ("wl-copy", ["wl-copy", *(["--type", "text/html"] if html else [])]),
        ("xclip", ["xclip", "-selection", "clipboard", *(["-t", "text/html"] if html else [])]),
        ("xsel", ["xsel", "--clipboard", "--input"]),
        ("pbcopy", ["pbcopy"]),
    ]
    if not wayland:  # on X11 (or none) prefer the X tools
        candidates = candidates[1:] + candidates[:1]
    return candidates


def copy(text: str, media_type: str = "text/plain") -> str:
    """Put `text` on the clipboard; the name of the tool used. ClipboardError when impossible."""
    for name, argv in _commands(media_type):
        if shutil.which(name) is None:
            continue
        try:
            done = subprocess.run(argv, input=text.encode("utf-8"), capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ClipboardError(f"{name} failed: {exc}") from None
        if done.returncode != 0:
            err = done.stderr.decode("utf-8", "replace").strip()[:300]
            raise ClipboardError(f"{name} failed (exit {done.returncode}): {err or 'no message'}; "
                                 "is a desktop session (DISPLAY / WAYLAND_DISPLAY) available?")
        return name
    raise ClipboardError(
        "no clipboard tool found: install wl-clipboard (Wayland) or xclip (X11), or on a machine "
        "without a desktop use `publisher preview --channel wechat` and its 复制到公众号 button, or "
        "`publisher render … --out DIR` and open the HTML file")
