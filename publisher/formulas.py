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
import io
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
    """The formula as a MathML `<math>` element."""
    from latex2mathml.converter import convert

    return convert(tex, display="block" if display else "inline")
