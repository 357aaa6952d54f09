"""Images made acceptable to a platform that takes only jpg/png under a byte limit (WeChat).

- `fit(data, limit=…)`: jpg/png under the limit pass unchanged; GIF (its first frame), WebP, BMP
  and jpg/png over the limit are converted with Pillow: an optimized PNG when that fits, else JPEG
  from quality 90 down to `QUALITY_FLOOR`, then scaled down in steps (never below `MIN_SIDE`
  pixels on the longer side). What cannot fit above that floor is refused, never degraded further.
- `cover(data)`: the feed card's picture — centre-cropped (or, for the QR code, padded with white)
  to 2.35:1 and scaled to at most 900 × 383, as JPEG.
- `download(url, …)`: a remote image, http/https only, with a byte cap, one time cap for the
  whole download, its Content-Type and its magic bytes checked; the address policy (private,
  loopback, link-local and reserved addresses refused unless `allow_private`, the connection to
  the checked address, every redirect checked; at most 3) is publisher/net.py's, shared with
  `publisher check`.

Errors are `ImageError` with a message a person can act on; callers add which image it is.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from publisher.refs import sniff

UPLOAD_LIMIT = 1024 * 1024  # WeChat in-article images: under 1 MB
QUALITY_START = 90
QUALITY_FLOOR = 70  # JPEG quality never goes below this
MIN_SIDE = 480  # scaling stops when the longer side would be shorter than this (pixels)
MAX_PIXELS = 50_000_000  # bound on what is decoded at all (a decompression bomb is refused)
FEED_RATIO = 2.35  # the feed card of the head article (900 × 383)
COVER_SIZE = (900, 383)
MAX_REDIRECTS = 3

FORMATS = {"jpeg": "jpg", "png": "png", "gif": "gif", "bmp": "bmp", "webp": "webp"}


class ImageError(ValueError):
    """An image cannot be used; the message says why and what to do."""


def mb(n: int) -> str:
    return f"{n / (1024 * 1024):.2f} MB"


@dataclass(frozen=True)
class Fitted:
    data: bytes
    format: str  # "jpeg" or "png"
    note: str = ""  # what was done, for the push's notes ("" when unchanged)

    @property
    def extension(self) -> str:
        return ".jpg" if self.format == "jpeg" else ".png"


def _open(data: bytes):
    from PIL import Image, ImageSequence, UnidentifiedImageError

    fmt = sniff(data)
    if fmt is None:
        raise ImageError("is not an image (jpg, png, gif, webp or bmp expected)")
    try:
        im = Image.open(io.BytesIO(data))
        w, h = im.size
        if w * h > MAX_PIXELS:
            raise ImageError(f"is {w} × {h} pixels, more than the {MAX_PIXELS:,} pixels this program "
                             "decodes; scale it down")
        frames = getattr(im, "n_frames", 1)
        if frames > 1:  # an animation: its first frame
            im = next(iter(ImageSequence.Iterator(im))).copy()
        im.load()
    except Image.DecompressionBombError:
        raise ImageError(f"has more than the {MAX_PIXELS:,} pixels this program decodes; scale it down") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageError(f"cannot be decoded as {fmt}: {exc}") from None
    note = f"{fmt} ({frames} frames) → first frame" if frames > 1 else ""
    return im, fmt, note


def _has_alpha(im) -> bool:
    return im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)


def _flatten(im):
    """RGB on white (JPEG has no transparency)."""
    from PIL import Image

    if _has_alpha(im):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, "white")
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return im.convert("RGB")


def _png(im) -> bytes:
    out = io.BytesIO()
    if im.mode not in ("RGB", "RGBA", "L", "LA", "P"):
        im = im.convert("RGBA" if _has_alpha(im) else "RGB")
    im.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _jpeg(im, quality: int) -> bytes:
    out = io.BytesIO()
    im.save(out, format="JPEG", quality=quality, optimize=True, progressive=True)
    return out.getvalue()


def fit(data: bytes, *, limit: int = UPLOAD_LIMIT) -> Fitted:
    """`data` as jpg or png under `limit` bytes (see the module's docstring); ImageError if not."""
    fmt = sniff(data)
    if fmt in ("jpeg", "png") and len(data) < limit:
        return Fitted(data, fmt)
    im, fmt, note = _open(data)
    steps = [note] if note else []
    if fmt != "jpeg":  # lossless first: screenshots and diagrams stay sharp
        png = _png(im)
        if len(png) < limit:
            steps.append(f"{FORMATS[fmt]} {mb(len(data))} → png {mb(len(png))}")
            return Fitted(png, "png", "; ".join(s for s in steps if s))
    rgb = _flatten(im)
    scale = 1.0
    w, h = rgb.size
    while True:
        frame = rgb if scale == 1.0 else rgb.resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                    resample=_lanczos())
        for quality in range(QUALITY_START, QUALITY_FLOOR - 1, -10):
            out = _jpeg(frame, quality)
            if len(out) < limit:
                size = f" at {frame.width} × {frame.height}" if scale != 1.0 else ""
                steps.append(f"{FORMATS[fmt]} {mb(len(data))} → jpg quality {quality}{size}, {mb(len(out))}")
                return Fitted(out, "jpeg", "; ".join(s for s in steps if s))
        scale *= 0.75
        if max(w, h) * scale < MIN_SIDE:
            raise ImageError(
                f"cannot be brought under {mb(limit)} without going below JPEG quality {QUALITY_FLOOR} "
                f"and {MIN_SIDE} px on its longer side; crop it or split it into smaller images"
            )


def _lanczos():
    from PIL import Image

    return Image.Resampling.LANCZOS


def cover(data: bytes, *, pad: bool = False) -> Fitted:
    """The feed card picture: 2.35:1 (cropped around the centre, or padded when `pad`), at most
    900 × 383, JPEG."""
    from PIL import Image

    im, _, _ = _open(data)
    rgb = _flatten(im)
    w, h = rgb.size
    if pad:  # the QR code must stay whole: white bands left and right
        width = max(w, round(h * FEED_RATIO))
        height = max(h, round(width / FEED_RATIO))
        canvas = Image.new("RGB", (width, height), "white")
        canvas.paste(rgb, ((width - w) // 2, (height - h) // 2))
        rgb = canvas
    elif w / h > FEED_RATIO:  # too wide: cut the sides
        new_w = round(h * FEED_RATIO)
        left = (w - new_w) // 2
        rgb = rgb.crop((left, 0, left + new_w, h))
    else:  # too tall: cut top and bottom
        new_h = round(w / FEED_RATIO)
        top = (h - new_h) // 2
        rgb = rgb.crop((0, top, w, top + new_h))
    if rgb.width > COVER_SIZE[0]:
        rgb = rgb.resize(COVER_SIZE, resample=_lanczos())
    out = _jpeg(rgb, QUALITY_START)
    return Fitted(out, "jpeg", f"cover {'padded' if pad else 'cropped'} to {rgb.width} × {rgb.height} (2.35:1)")


# -- remote images ----------------------------------------------------------------------------


def download(url: str, *, max_bytes: int, timeout: float, allow_private: bool = False,
             user_agent: str = "publisher") -> bytes:
    """The bytes of the image at `url` (see the module's docstring); ImageError when refused.

    `timeout` bounds the whole download (resolution, connect, headers and body, across
    redirects): publisher/net.py's watchdog closes the socket when it is spent."""
    from publisher import net

    limit = "[wechat] remote_image_timeout"
    try:
        with net.open_url(url, timeout=timeout, allow_private=allow_private, max_redirects=MAX_REDIRECTS,
                          headers={"User-Agent": user_agent, "Accept": "image/*"}, what=limit) as resp:
            if resp.status != 200:
                raise ImageError(f"answered HTTP {resp.status}; fix or replace the image URL")
            ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if not ctype.startswith("image/"):
                raise ImageError(f"is not an image: the server says Content-Type {ctype or '(none)'}")
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise ImageError(f"is {mb(int(length))}, over the {mb(max_bytes)} download cap "
                                 "([wechat] remote_image_max_bytes); use a smaller image")
            data = resp.read(max_bytes)
    except net.NetError as exc:
        if exc.kind == "too-large":
            raise ImageError(f"is over the {mb(max_bytes)} download cap ([wechat] remote_image_max_bytes); "
                             "use a smaller image") from None
        if exc.kind in ("timeout", "redirects", "refused", "dns"):
            raise ImageError(exc.message) from None
        raise ImageError(f"cannot be downloaded: {exc.message}") from None
    if sniff(data) is None:
        raise ImageError(f"is not an image: its content (Content-Type {ctype}) is not jpg, png, "
                         "gif, webp or bmp")
    return data
