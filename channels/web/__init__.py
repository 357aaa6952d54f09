"""Web: the newsletter's own static site — one HTML page per issue, an index with the 往期回顾
calendar, an Atom feed (RFC 4287) and a sitemap.

Pages are standalone and responsive (the stylesheet templates/style.css goes into each page's
<style>), need no JavaScript, and carry Open Graph / Twitter card metadata. Every internal link is
relative (`2026-11-23.html`, `index.html`), so the site works from any folder or base URL;
absolute URLs — the feed, the sitemap, og:url — come from `[web] base_url`.

Site-level files depend on the whole archive. They travel as `parts` of one rendition: the one of
the newest issue that is not a draft ("the carrier"). Its rendition is the whole site — every
listed issue's page and images, index.html, feed.xml and sitemap.xml — so pushing it publishes a
complete site, and a build writes each file once per change (files whose bytes did not change are
not rewritten). Any other issue's rendition is its own page only. Drafts get a page (for preview)
but are neither listed nor linked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import posixpath
import re
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from markupsafe import Markup
from publisher.channels.archive import calendar
from publisher.channels.base import Channel, LocalImage, PastIssue, Rendition, license_of
from publisher.channels.html_writer import (
    FORMULA_INK,
    HtmlWriter,
    cut,
    is_remote,
    lead_html,
    lead_text,
    local_image,
    qr_image,
    section_html,
)

from publisher import formulas
from publisher.errors import ConfigError
from publisher.model import Image, Issue
from publisher.refs import is_http, issue_folder

PAGE = "web/page.html"
INDEX = "web/index.html"
FEED = "web/feed.xml"
SITEMAP = "web/sitemap.xml"
ARTICLE = "web/article.html"
SITE_FILES = ("index.html", "feed.xml", "sitemap.xml")
DESCRIPTION_LIMIT = 200


class WebChannel(Channel):
    name = "web"
    template_folder = Path(__file__).parent / "templates"
    media_type = "text/html"
    extension = ".html"
    transport = "publisher.channels.web.transport:WebTransport"
    config = """
[web]
base_url = ""           # public URL of the site's root, e.g. "https://example.org/newsletter/" (required)
feed_entries = 20       # issues in feed.xml, newest first, with full content
subscribe_url = ""      # where the subscribe form posts (field "email"); empty = no form
folder = "site"         # push: the folder the site is written to (when repo_path is empty)
repo_path = ""          # push: a git repository to commit the site into instead (a clone, or bare)
branch = "gh-pages"     # … on this branch (the working tree is never touched)
remote = "origin"       # … and push it there when `push` is true
push = false
"""

    reads_sources = True  # the site carrier's pages and feed are made from every listed issue's source

    @classmethod
    def archive_slice(cls, date, archive):
        """The carrier (no listed issue is newer) reads the whole archive; any other issue only
        needs to know it is not the carrier: the next newer listed issue."""
        later = [p for p in archive if p.date > date]
        return [later[-1]] if later else list(archive)

    # -- settings ---------------------------------------------------------------------------

    def base_url(self) -> str:
        base = str(self.settings["web"]["base_url"]).strip()
        if not base:
            raise ConfigError(
                f"[web] base_url is not set: the feed, the sitemap and shared links need the site's public "
                f"address; set it in {self.settings.where()}, e.g. base_url = \"https://example.org/newsletter/\"")
        if not is_http(base) or not re.match(r"^\w+://[^/\s]+", base) or any(c in base for c in "\"'<> "):
            raise ConfigError(f"[web] base_url = {base!r} is not an http(s) URL (set in {self.settings.where()})")
        return base if base.endswith("/") else base + "/"

    def _timezone(self) -> dt.tzinfo:
        name = self.settings["schedule"]["timezone"]
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"[schedule] timezone = {name!r} is not a known time zone "
                              f"(set in {self.settings.where()})") from None

    def published(self, issue: Issue) -> dt.datetime:
        """When an issue came out: its publish_at, else its date at midnight in [schedule] timezone.
        Derived from the source only, so feed times are the same on every rebuild."""
        when = issue.publish_at
        if when is None:
            return dt.datetime.combine(issue.date, dt.time(), self._timezone())
        return when if when.tzinfo else when.replace(tzinfo=self._timezone())

    # -- one issue ------------------------------------------------------------------------------

    def page_name(self, issue: Issue) -> str:
        return self.filename(issue)

    def _image_ref(self, issue: Issue, src: str) -> str:
        """Where a local image of `issue` goes in the site: under a folder named after the issue
        (issues may reuse image names); a path leaving the issue's folder is renamed, never followed."""
        rel = posixpath.normpath(src.replace("\\", "/"))
        if rel.startswith(("../", "/")) or rel in ("..", "."):
            digest = hashlib.sha256(src.encode()).hexdigest()[:8]
            rel = f"{digest}-{posixpath.basename(rel) or 'image'}"
        return f"{issue.slug}/{rel}"

    def _article(self, issue: Issue, prefix: str = "") -> tuple[Markup, list[LocalImage]]:
        """The issue's content (everything but the site's header and footer) as HTML; local
        images referenced as `prefix + <issue>/<path>` ("" on pages, the base URL in the feed)."""
        base_dir = issue_folder(issue.source_path) if issue.source_path else self.ctx.base_dir
        images: dict[str, LocalImage] = {}

        def add_local(src: str, role: str) -> str:
            ref = self._image_ref(issue, src)
            if ref not in images:
                found = local_image(src, base_dir, issue, role)
                images[ref] = LocalImage(ref=ref, path=found.path, role=role, media_type=found.media_type,
                                         source=src)
            return prefix + ref

        def image_src(node: Image) -> str:
            return node.src if is_remote(node.src) else add_local(node.src, "inline")

        def formula(tex: str, display: bool) -> str:
            # the page shows MathML (the browser lays it out); the site also publishes the formula's
            # PNG in the email's ink beside the page, where email's [newsletter] image_base_url
            # (`<site>/{date}`) points mail clients
            img = formulas.image(tex, display, FORMULA_INK)
            ref = f"{issue.slug}/{img.name}"
            if ref not in images:
                images[ref] = LocalImage(ref=ref, data=img.data, role="inline", media_type="image/png")
            return formulas.mathml(tex, display)

        w = HtmlWriter(image_src=image_src, formula=formula, footnotes=issue.footnotes, classes=True)
        lead = lead_html(w, issue)
        # the same section parts as wechat and email: the 摘要 label where the source wrote it,
        # the section's closing text after its items
        sections = [section_html(w, section) for section in issue.sections]
        if issue.cover and not is_remote(issue.cover):
            add_local(issue.cover, "cover")
        html = self.ctx.env.get_template(ARTICLE).render(
            issue=issue, lead=Markup(lead), briefs=[w.brief(b) for b in issue.warmup],
            notes=Markup(w.blocks(issue.notes)), sections=sections,
            footnotes=Markup(w.footnotes_html(issue.footnotes)))
        return Markup(html), list(images.values())

    def description(self, issue: Issue) -> str:
        return cut(issue.digest or lead_text(issue) or issue.tagline or issue.title, DESCRIPTION_LIMIT)

    def _page(self, issue: Issue, base: str) -> tuple[str, list[LocalImage]]:
        article, images = self._article(issue)
        qr = self.qr_src(base)
        if not issue.cover:
            cover = qr if is_remote(qr) else base + qr
        elif is_remote(issue.cover):
            cover = issue.cover
        else:
            cover = base + self._image_ref(issue, issue.cover)
        html = self.ctx.env.get_template(PAGE).render(
            issue=issue,
            article=article,
            url=base + self.page_name(issue),
            description=self.description(issue),
            cover=cover,
            published=self.published(issue).isoformat(),
            subscribe_url=self.settings["web"]["subscribe_url"],
            license=license_of(issue, self.settings),
            qr=qr,
        )
        return html, images

    def qr_src(self, base: str) -> str:
        """Where pages show the follow-account QR: `qr.png` beside them when it is a file or
        generated, else the account's public QR image URL."""
        qr = qr_image(self.settings)
        return qr if isinstance(qr, str) else "qr.png"

    # -- the site -------------------------------------------------------------------------------

    def listed_issues(self, issue: Issue) -> list[Issue] | None:
        """The issues the site lists, newest first, when `issue` carries the site (it is the newest
        issue of the archive that is listed — `ready` or `archived`); None otherwise."""
        if not issue.listed:
            return None
        listed = [issue]
        for past in self.ctx.archive:
            if past.date > issue.date:
                return None
            if past.date != issue.date:
                listed.append(self.ctx.load(past))  # the archive holds listed issues only (pipeline.archive)
        return sorted(listed, key=lambda i: i.date, reverse=True)

    def render(self, issue: Issue) -> Rendition:
        base = self.base_url()
        listed = self.listed_issues(issue)
        body, page_images = self._page(issue, base)
        images: dict[str, LocalImage] = {i.ref: i for i in page_images}
        qr = qr_image(self.settings)
        if not isinstance(qr, str):
            images["qr.png"] = LocalImage(ref="qr.png", data=qr.read(), role="qr", media_type=qr.media_type)
        qr_src = self.qr_src(base)
        qr_url = qr_src if not qr_src or is_remote(qr_src) else base + qr_src
        parts: dict[str, str] = {}
        if listed is not None:
            env = self.ctx.env
            for other in listed[1:]:
                html, other_images = self._page(other, base)
                parts[self.page_name(other)] = html
                images.update((i.ref, i) for i in other_images)
            entries = []
            for other in listed[: self.settings["web"]["feed_entries"]]:
                content, _ = self._article(other, prefix=base)
                entries.append({"issue": other, "url": base + self.page_name(other),
                                "published": self.published(other).isoformat(),
                                "summary": self.description(other), "content": str(content),
                                "author": other.author or self.settings["newsletter"]["author"]})
            updated = max((e["published"] for e in entries), default=self.published(issue).isoformat(),
                          key=dt.datetime.fromisoformat)
            newest = listed[0]
            parts["index.html"] = env.get_template(INDEX).render(
                latest=newest, latest_url=self.page_name(newest), latest_description=self.description(newest),
                calendar=calendar([PastIssue(i.date, i.title) for i in listed], "{date}.html"),
                url=base, cover=qr_url, count=len(listed), description=self.settings["newsletter"]["tagline"],
                subscribe_url=self.settings["web"]["subscribe_url"],
                license=license_of(newest, self.settings), qr=qr_src)
            parts["feed.xml"] = env.get_template(FEED).render(
                base=base, entries=entries, updated=updated, icon=qr_url)
            parts["sitemap.xml"] = env.get_template(SITEMAP).render(
                base=base, pages=[(self.page_name(i), i.slug) for i in listed], updated=newest.slug)
        return Rendition(
            channel=self.name,
            issue=issue.slug,
            body=body,
            media_type=self.media_type,
            filename=self.page_name(issue),
            metadata={"url": base + self.page_name(issue), "title": issue.title,
                      "digest": self.description(issue),
                      "site_files": [n for n in SITE_FILES if n in parts], "pages": 1 + len(parts) - (
                          sum(1 for n in SITE_FILES if n in parts))},
            images=tuple(images.values()),
            parts=parts,
        )

