"""The WeChat tab of `publisher preview` (the markup is templates/preview.html beside it): the
draft fields against the limits the push and `publisher check` use (limits.py)."""

from __future__ import annotations

import publisher.channels.wechat.limits as limits


def _row(label: str, value: str, size: int, limit: int, unit: str = "chars", *, strict: bool = False) -> dict:
    """`strict`: the platform wants the size under `limit`, not at most `limit`."""
    return {"label": label, "value": value, "size": size, "limit": limit, "unit": unit, "strict": strict,
            "over": size >= limit if strict else size > limit}


def panel(rendition, view):
    meta = rendition.metadata
    title, digest, author, source_url = (str(meta.get(k) or "") for k in
                                         ("title", "digest", "author", "content_source_url"))
    rows = [
        _row("title", title, len(title), limits.TITLE_MAX_CHARS),
        _row("author", author, len(author), limits.AUTHOR_MAX_CHARS),
        _row("digest", digest, len(digest), limits.DIGEST_MAX_CHARS),
        _row("content", "article HTML", len(rendition.body), limits.CONTENT_MAX_CHARS + 1, strict=True),
        _row("content bytes", "article HTML, UTF-8", len(rendition.body.encode("utf-8")),
             limits.CONTENT_MAX_BYTES + 1, "bytes", strict=True),
        _row("content_source_url", source_url, len(source_url.encode("utf-8")), limits.SOURCE_URL_MAX_BYTES, "bytes"),
    ]
    covers = [img for img in rendition.images if img.role == "cover"]
    return view.render(
        "wechat/preview.html",
        copy_block=view.copy_block(), cover_url=view.image_url(covers[0]) if covers else None,
        title=title, digest=digest, account=view.settings["newsletter"].get("account", ""), rows=rows,
        sandbox=view.sandbox, frame=view.fragment_frame(view.rewrite(rendition.body)), source_url=source_url,
        theme=view.settings["wechat"]["theme"], themes=_other_themes(view))


def _other_themes(view) -> list[dict]:
    """The article in every other theme (the switcher above the phone; 复制 copies the configured one)."""
    from publisher.channels.wechat.themes import theme_names

    from publisher.errors import PublisherError

    if view.rerender is None:
        return []
    out = []
    for name in theme_names(view.env):
        if name == view.settings["wechat"]["theme"]:
            continue
        try:
            other = view.variant(name, theme=name)
        except PublisherError as exc:  # a broken user theme: shown in the switcher, not fatal
            out.append({"name": name, "error": str(exc), "frame": "", "size": 0})
            continue
        out.append({"name": name, "error": "", "frame": other.fragment_frame(other.rewrite(other.rendition.body)),
                    "size": len(other.rendition.body)})
    return out
