"""The email's tab of `publisher preview` (the markup is templates/preview.html beside it)."""

from __future__ import annotations

from publisher.channels.email.limits import HTML_MAX_BYTES


def panel(rendition, view, placeholder: str):
    """From, Subject, preheader and size, the HTML part in a frame, the text part one click away
    (`placeholder`: the unsubscribe link's stand-in, a dead link here)."""
    meta = rendition.metadata
    email = view.settings["email"]
    body = view.rewrite(rendition.body.replace(placeholder, "#"))
    text = rendition.parts.get(f"{rendition.issue}.txt")
    if text is None:
        text = next((v for k, v in rendition.parts.items() if k.endswith(".txt")), "")
    return view.render(
        "email/preview.html",
        sender=f"{email['from_name']} <{email['from_address']}>",
        subject=str(meta.get("subject") or meta.get("title") or ""),
        preheader=str(meta.get("preheader") or meta.get("digest") or ""),
        size=len(rendition.body.encode("utf-8")), limit=HTML_MAX_BYTES,
        sandbox=view.sandbox, frame=view.frame(body), text=text.replace(placeholder, "#"))
