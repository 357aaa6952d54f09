"""Formulas (`$…$`, `$$…$$`) rendered on our side: WeChat runs no script and mail clients no MathJax.

- PNG images for WeChat (uploaded like any other image) and email, by matplotlib's mathtext: a
  pure-Python TeX math layout engine (TeX's own algorithms and the DejaVu/STIX fonts it ships), no
  LaTeX installation, no browser.
- MathML for the web channel, by latex2mathml (Chromium, Firefox and Safari render MathML Core).

A formula is checked by both when the issue is read (`problem()`), so a malformed one is a source
error with its line, never a broken image in one channel. Results are cached by their LaTeX source.
"""

from __future__ import annotations

import functools
import hashlib
import html
import io
import re
from dataclasses import dataclass

SCALE = 2  # the PNG has 2 pixels per CSS pixel (sharp on phone screens)
FONT_PX = 16  # the formula's font size in CSS pixels


@dataclass(frozen=True)
class FormulaImage:
    data: bytes
    width: float  # CSS pixels
    height: float
    depth: float  # CSS pixels below the baseline (for vertical-align)
    name: str  # a file name from the content hash: math-<hash>.png


@functools.cache
def _mathtext():
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import mathtext
    from matplotlib.font_manager import FontProperties

    return mathtext, FontProperties


def _dollars(tex: str) -> str:
    return "$" + tex.replace("\n", " ") + "$"


@functools.lru_cache(maxsize=1024)
def problem(tex: str) -> str | None:
    """Why `tex` cannot be rendered (matplotlib's or latex2mathml's message), or None."""
    try:
        image(tex, False, "#333333")
    except ValueError as exc:
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        return lines[-1] if lines else "not a formula"
    try:
        mathml(tex, False)
    except Exception as exc:  # latex2mathml raises its own exception classes (and a few builtins)
        return f"{type(exc).__name__}: {exc}"
    return None


@functools.lru_cache(maxsize=1024)
def image(tex: str, display: bool, color: str) -> FormulaImage:
    """The formula as a PNG (transparent background, `color` ink)."""
    mathtext, FontProperties = _mathtext()
    from PIL import Image as PILImage

    size = FONT_PX * (1.2 if display else 1.0)
    buf = io.BytesIO()
    # at 72 dpi one point is one pixel: `size` points at 72 * SCALE dpi is `size` CSS pixels
    depth = mathtext.math_to_image(_dollars(tex), buf, prop=FontProperties(size=size), dpi=72 * SCALE,
                                   format="png", color=color)
    data = buf.getvalue()
    with PILImage.open(io.BytesIO(data)) as im:
        w, h = im.size
    digest = hashlib.sha256(f"{tex}\0{display}\0{color}".encode()).hexdigest()[:16]
    return FormulaImage(data, round(w / SCALE, 1), round(h / SCALE, 1), round(float(depth) / SCALE, 1),
                        f"math-{digest}.png")


@functools.lru_cache(maxsize=1024)
def mathml(tex: str, display: bool) -> str:
    """The formula as a MathML `<math>` element, rebuilt from an allow-list: latex2mathml copies
    `\\text{<script>…}` and `\\href{javascript:…}` through as markup, so its output is parsed and
    written again with known MathML elements and attributes only (anything else: ValueError)."""
    from xml.etree import ElementTree

    from latex2mathml.converter import convert

    root = ElementTree.fromstring(convert(tex, display="block" if display else "inline"))
    out: list[str] = []
    _write(root, out)
    return "".join(out)


_NS = "{http://www.w3.org/1998/Math/MathML}"
MATHML_ELEMENTS = frozenset([
    "math", "mrow", "mi", "mn", "mo", "ms", "mtext", "mspace", "msub", "msup", "msubsup", "mfrac", "msqrt",
    "mroot", "munder", "mover", "munderover", "mtable", "mtr", "mtd", "mlabeledtr", "mstyle", "mpadded",
    "mphantom", "menclose", "merror", "mmultiscripts", "mprescripts", "none", "semantics",
])
MATHML_ATTRIBUTES = frozenset([
    "display", "mathvariant", "stretchy", "fence", "separator", "lspace", "rspace", "form", "minsize", "maxsize",
    "movablelimits", "accent", "accentunder", "linethickness", "columnalign", "columnspacing", "rowspacing",
    "columnlines", "rowlines", "frame", "framespacing", "equalrows", "equalcolumns", "displaystyle",
    "scriptlevel", "width", "height", "depth", "voffset", "notation", "mathcolor", "mathbackground", "mathsize",
    "align", "rowalign", "columnspan", "rowspan", "largeop", "symmetric", "open", "close", "separators",
    "bevelled",
])
_SAFE_VALUE = re.compile(r"[#\w .%+-]{0,64}")


def _write(el, out: list[str]) -> None:
    tag = el.tag[len(_NS):] if el.tag.startswith(_NS) else el.tag
    if tag not in MATHML_ELEMENTS:
        raise ValueError(f"the formula makes a <{tag}> element, which is not MathML: remove it")
    attrs = ""
    for name, value in el.attrib.items():
        if name not in MATHML_ATTRIBUTES or not _SAFE_VALUE.fullmatch(value):
            raise ValueError(f"the formula sets {name}={value[:30]!r}, which is not allowed: remove it")
        attrs += f' {name}="{html.escape(value)}"'
    if tag == "math":
        attrs = ' xmlns="http://www.w3.org/1998/Math/MathML"' + attrs
    out.append(f"<{tag}{attrs}>" + html.escape(el.text or "", quote=False))
    for child in el:
        _write(child, out)
        out.append(html.escape(child.tail or "", quote=False))
    out.append(f"</{tag}>")
