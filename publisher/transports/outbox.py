"""Transport for the channels without an API (zhihu, aijishu, plaintext): the outbox.

The rendition goes to `[outbox] path / DATE / <channel>.md|.txt` with its local images beside it,
ready for an editor to paste or import by hand. Every file is written atomically (temporary
file + rename) and the page itself last, so a page in the outbox always has its images.
"""

from __future__ import annotations

import os
from pathlib import Path

from publisher.atomic import atomic_write
from publisher.channels.base import Rendition
from publisher.errors import TransportError
from publisher.refs import is_remote

from .base import PushContext, PushResult, Transport


def _atomic_write(path: Path, data: bytes) -> None:
    atomic_write(path, data, fsync=True)


class OutboxTransport(Transport):
    channel = "outbox"

    def push(self, rendition: Rendition, ctx: PushContext) -> PushResult:
        settings = ctx.settings
        root = settings.require("outbox", "path", "where pages for the channels without an API go")
        folder = Path(root) / rendition.issue
        suffix = Path(rendition.filename).suffix or ".txt"
        page = folder / f"{rendition.channel}{suffix}"
        if ctx.dry_run:
            return PushResult(url=str(page), summary=f"would write {page}")
        files: list[str] = []
        try:
            for image in rendition.images:
                if is_remote(image.ref) or image.ref.startswith("/"):
                    continue
                target = Path(os.path.normpath(folder / image.ref))
                if not target.is_relative_to(folder):
                    raise TransportError(f"image {image.ref} of the {rendition.channel} rendition "
                                         f"points outside the outbox folder {folder}")
                if image.data is None and (image.path is None or not image.path.is_file()):
                    raise TransportError(f"image {image.ref} of the {rendition.channel} rendition: "
                                         f"file {image.path} does not exist")
                _atomic_write(target, image.read())
                files.append(str(target))
            for name, text in rendition.parts.items():
                target = folder / f"{rendition.channel}.{name}"
                _atomic_write(target, text.encode("utf-8"))
                files.append(str(target))
            for name, data in rendition.binary_parts.items():
                target = folder / f"{rendition.channel}.{name}"
                _atomic_write(target, data)
                files.append(str(target))
            _atomic_write(page, rendition.body.encode("utf-8"))
        except OSError as exc:
            raise TransportError(f"cannot write to the outbox {folder}: {exc.strerror or exc}") from None
        files.append(str(page))
        return PushResult(url=str(page), summary=f"wrote {page}", details={"files": files})
