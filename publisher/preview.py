"""`publisher preview`: every channel's rendition of one issue, as its readers will see it.

The page is built from the renditions `publisher.pipeline` produces — nothing is rendered twice.
A channel may show itself its own way (`Channel.preview`: the email as a mail client shows it, the
WeChat article in a phone frame with its draft limits — each a template of the channel's folder);
any other is shown rendered and as source, side by side.

Without `--serve` the page is one self-contained HTML file (images as data: URIs). With `--serve`
a local server re-renders as soon as the kernel reports (inotify, through watchfiles) that the
issue, the config or a template changed, and the page swaps the new version in place (Server-Sent
Events announce it); a broken source shows its `file:line: error` on the page.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import html
import json
import mimetypes
import re
import socket
import threading
import time
import traceback
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from markupsafe import Markup, escape

from publisher import pipeline
from publisher.atomic import atomic_write
from publisher.channels.base import get_channel
from publisher.errors import ConfigError, Diagnostic, PublisherError, SourceError

# watchfiles: a change is reported once no further event came for WATCH_STEP_MS (an editor's save
# is several writes), or after WATCH_DEBOUNCE_MS of continuous events at the latest
WATCH_STEP_MS = 15
WATCH_DEBOUNCE_MS = 300
# on Ctrl-C, the longest the server waits for each of its threads (a render in progress) to end
STOP_SECONDS = 5.0
# the served pages kept for their frames and images: a page still loading them while newer versions land
KEEP_PAGES = 8

IMG_SRC_RE = re.compile(r"""(<img\b[^>]*?\bsrc\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
FRONT_MATTER_RE = re.compile(r"\A---\n(.*?\n)---\n", re.DOTALL)
SCHEME_RE = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)


class PreviewError(PublisherError):
    """The preview cannot be made or served (bad channel name, port in use, …)."""


# --------------------------------------------------------------------------------------------
# images


@dataclass(frozen=True)
class ImageBlob:
    data: bytes
    media_type: str


def _placeholder(ref: str) -> str:
    """A visible stand-in for an image the preview cannot find (a data: URI, so it loads)."""
    label = escape(f"image not found: {ref}")
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="240" height="60" viewBox="0 0 240 60">'
        '<rect width="240" height="60" fill="#fde8e8" stroke="#c00" stroke-dasharray="4"/>'
        f'<text x="8" y="34" font-size="11" fill="#a00" font-family="sans-serif">{label}</text></svg>'
    )
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


@dataclass
class ImageTable:
    """Maps the image refs of renditions, and the documents of the iframes, to URLs the preview
    page can load.

    `inline=True` (the static file) embeds data: URIs and srcdoc documents; otherwise images are
    registered under /image/<n> and each iframe's document under /frame/<channel> for the preview
    server to serve (the served page's policy allows no inline style, and a srcdoc document would
    inherit it), with `?v=<version>`: a page asks for its own version's, even once a newer one is up.
    """

    inline: bool
    version: int | None = None
    blobs: list[ImageBlob] = field(default_factory=list)
    frames: dict[str, str] = field(default_factory=dict)  # channel -> its iframe's document
    missing: list[tuple[str, str]] = field(default_factory=list)  # (channel, ref)
    _by_key: dict[tuple, str] = field(default_factory=dict)

    def url_for(self, key: tuple, load: Callable[[], ImageBlob]) -> str:
        if key in self._by_key:
            return self._by_key[key]
        blob = load()
        if self.inline:
            url = f"data:{blob.media_type};base64," + base64.b64encode(blob.data).decode("ascii")
        else:
            self.blobs.append(blob)
            url = f"/image/{len(self.blobs) - 1}{self._v}"
        self._by_key[key] = url
        return url

    def frame(self, channel: str, document: str) -> Markup:
        """The attribute that loads `document` into `channel`'s iframe."""
        if self.inline:
            return Markup(f'srcdoc="{_srcdoc(document)}"')
        self.frames[channel] = document
        return Markup(f'src="/frame/{escape(channel)}{self._v}"')

    @property
    def _v(self) -> str:
        return "" if self.version is None else f"?v={self.version}"

    def rewrite(self, markup: str, rendition, base_dir: Path | None) -> str:
        """Point every <img src> of `markup` at something the preview can load."""
        by_ref = {img.ref: img for img in rendition.images}

        def local(src: str) -> str | None:
            image = by_ref.get(src)
            if image is not None:
                try:
                    data = image.read()
                except OSError:
                    data = None
                if data is not None:
                    return self.url_for(
                        ("rendition", rendition.channel, src),
                        lambda: ImageBlob(data, image.media_type or _guess_type(src)),
                    )
            if SCHEME_RE.match(src) or src.startswith("/"):
                # a public URL the channel made of a local image (email links the archive's copy,
                # which exists only once the issue is pushed): show the local file
                path_part = urlsplit(src).path
                for ref, img in by_ref.items():
                    if not SCHEME_RE.match(ref) and img.role == "inline" and path_part.endswith("/" + ref.lstrip("./")):
                        return local(ref)
                return None  # remote: the reader's client loads it
            if base_dir is not None:
                from publisher.refs import contained

                path = contained(base_dir, unquote(src))  # never a file outside the issue's folder
                if path is not None and path.is_file():
                    return self.url_for(
                        ("file", str(path)), lambda: ImageBlob(path.read_bytes(), _guess_type(path.name))
                    )
            if (rendition.channel, src) not in self.missing:
                self.missing.append((rendition.channel, src))
            return _placeholder(src)

        def repl(m: re.Match) -> str:
            src = html.unescape(m.group(3)).strip()
            new = local(src)
            if new is None:
                return m.group(0)
            return f"{m.group(1)}{m.group(2)}{html.escape(new, quote=True)}{m.group(2)}"

        return IMG_SRC_RE.sub(repl, markup)


def _guess_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


# --------------------------------------------------------------------------------------------
# the page


@dataclass
class Panel:
    channel: str
    html: Markup
    ok: bool = True


def _srcdoc(document: str) -> str:
    return html.escape(document, quote=True)


# Rendered content is shown only inside sandboxed iframes (no allow-scripts) under this policy:
# no script, object or frame from an issue runs, whatever a channel lets through.
CONTENT_POLICY = ("default-src 'none'; img-src * data: blob:; style-src 'unsafe-inline'; "
                  "font-src data:; base-uri 'none'; form-action 'none'")
SANDBOX = "allow-same-origin allow-popups allow-popups-to-escape-sandbox"
# The served page itself (a header on `/`): its own script and stylesheet (/preview.js,
# /preview.css) and nothing inline, so markup that escaped a frame still runs nothing; the frames
# are documents of their own (/frame/<channel>) under CONTENT_POLICY.
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
               "connect-src 'self'; frame-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _with_policy(document: str) -> str:
    """A complete HTML document (the email) with the content policy as the first thing in it."""
    meta = f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_POLICY}">'
    head = re.search(r"<head[^>]*>", document[:4096], re.I)
    return document[: head.end()] + meta + document[head.end():] if head else meta + document


def _iframe_doc(body: str, *, extra_css: str = "") -> str:
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_POLICY}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<base target="_blank">'
        "<style>html,body{margin:0}body{padding:16px 14px;font-family:-apple-system,"
        '"PingFang SC","Microsoft YaHei",sans-serif}img{max-width:100%;height:auto}'
        f"{extra_css}</style></head><body>{body}</body></html>"
    )


MARKDOWN_CSS = ("body{overflow-wrap:anywhere}table{display:block;overflow-x:auto}"
                "pre{background:#f6f8fa;padding:8px;overflow-x:auto}")


def _markdown_to_html(text: str) -> tuple[str, str]:
    """(front matter, HTML) of a Markdown body, rendered with mistune the way a site would."""
    import mistune

    front = ""
    m = FRONT_MATTER_RE.match(text)
    if m:
        front, text = m.group(1), text[m.end():]
    md = mistune.create_markdown(escape=False, plugins=["table", "strikethrough", "url"])
    return front, md(text)


def _json_for_script(value: object) -> str:
    """JSON safe inside <script> (no `</script>`, no `<!--`)."""
    return json.dumps(value, ensure_ascii=False).replace("<", "\\u003c")


def copy_block(rendition, settings) -> str:
    """The 复制到公众号 button: it copies the article exactly as the mp editor takes it (the body
    with the uploaded image URLs the ledger records), read from JSON embedded in this page — never
    from the (sandboxed) iframe."""
    channel = get_channel(rendition.channel)
    body, warnings = (channel.transport_class().pasteable(rendition, settings) if channel.transport
                      else (rendition.body, []))
    notes = "".join(f'<p class="copy-warning">{escape(w)}</p>' for w in warnings)
    data = _json_for_script({"html": body})
    return (f'<div class="copy"><button type="button" data-copy>复制到公众号</button>'
            f'<span class="copy-status" role="status"></span>{notes}'
            f'<script type="application/json" class="copy-data">{data}</script></div>')


def source_panel(rendition, settings, images: ImageTable, base_dir: Path | None) -> Markup:
    body = rendition.body
    front = ""
    if "markdown" in rendition.media_type:
        front, rendered = _markdown_to_html(body)
        rendered = images.rewrite(rendered, rendition, base_dir)
        rendered_html = (
            f'<iframe class="html-render markdown-render" title="rendered Markdown" sandbox="{SANDBOX}" '
            f'{images.frame(rendition.channel, _iframe_doc(rendered, extra_css=MARKDOWN_CSS))}></iframe>'
        )
    elif "html" in rendition.media_type:
        rendered = images.rewrite(body, rendition, base_dir)
        rendered_html = (
            f'<iframe class="html-render" sandbox="{SANDBOX}" '
            f'{images.frame(rendition.channel, _iframe_doc(rendered))}></iframe>'
        )
    else:
        rendered_html = f'<pre class="plain">{escape(body)}</pre>'
    front_html = (
        f'<details class="front" open><summary>front matter</summary><pre>{escape(front)}</pre></details>'
        if front else ""
    )
    return Markup(
        f"""<div class="sbs">
<section class="pane rendered"><h3>Rendered</h3>{front_html}{rendered_html}</section>
<section class="pane source"><h3>Source <small>{escape(rendition.filename)} · {escape(rendition.media_type)} · {len(body):,} chars</small></h3><pre class="src">{escape(body)}</pre></section>
</div>"""
    )


@dataclass
class PanelView:
    """What a channel's own preview panel (`Channel.preview`) may use: its rendition's images made
    loadable, its documents put in sandboxed frames, its templates, the 复制 button of its transport."""

    rendition: object
    settings: object
    images: ImageTable
    base_dir: Path | None
    env: object  # the jinja2 environment of the channel's templates (user folder first)
    sandbox: str = SANDBOX
    # renders the same issue for this channel again with some of its settings changed
    # ({"theme": "jade"} for [<channel>] theme): a panel's switcher between looks
    rerender: Callable[[dict], object] | None = None
    key: str = ""  # "" for the rendition as configured; a variant's frames are told apart by it

    def variant(self, key: str, **overrides) -> PanelView:
        """The view of the rendition with `overrides` in the channel's own config table."""
        if self.rerender is None:
            raise PublisherError("this preview cannot render variants")
        rendition = self.rerender(overrides)
        return PanelView(rendition, self.settings, self.images, self.base_dir, self.env, self.sandbox,
                         self.rerender, key)

    def rewrite(self, markup: str) -> str:
        """`markup` with every <img src> pointing at something the preview can load."""
        return self.images.rewrite(markup, self.rendition, self.base_dir)

    def frame(self, document: str) -> Markup:
        """The attribute loading a complete HTML `document` into a sandboxed iframe, under the content policy."""
        return self.images.frame(self.rendition.channel, _with_policy(document))

    def fragment_frame(self, body: str, extra_css: str = "") -> Markup:
        """The same for an HTML fragment (wrapped in a minimal document)."""
        name = self.rendition.channel + (f"~{self.key}" if self.key else "")
        return self.images.frame(name, _iframe_doc(body, extra_css=extra_css))

    def image_url(self, image) -> str | None:
        """A URL the page can load for one LocalImage of the rendition (None: it cannot be read)."""
        try:
            data = image.read()
        except OSError:
            return None
        return self.images.url_for(("rendition", self.rendition.channel, image.ref),
                                   lambda: ImageBlob(data, image.media_type or _guess_type(image.ref)))

    def copy_block(self) -> Markup:
        """The 复制 button: the body exactly as the platform's editor takes it (`Transport.pasteable`)."""
        return Markup(copy_block(self.rendition, self.settings))

    def render(self, template: str, **values) -> Markup:
        return Markup(self.env.get_template(template).render(**values))


def panel(rendition, settings, images: ImageTable, base_dir: Path | None, env, rerender=None) -> Markup:
    """A channel's tab: its own panel (`Channel.preview`), or its rendered output beside its source."""
    view = PanelView(rendition, settings, images, base_dir, env, rerender=rerender)
    own = get_channel(rendition.channel).preview(rendition, view)
    return own if own is not None else source_panel(rendition, settings, images, base_dir)


def _error_block(lines: list[str], title: str = "error") -> Markup:
    items = "".join(f"<li>{escape(line)}</li>" for line in lines)
    return Markup(f'<div class="errors" role="alert"><h3>{escape(title)}</h3><ul>{items}</ul></div>')


@dataclass
class Page:
    html: str
    images: list[ImageBlob]
    ok: bool  # False when the source could not be read
    frames: dict[str, str] = field(default_factory=dict)  # channel -> its iframe's document (served)


def build_page(
    settings,
    issue_path: Path,
    channels: list[str],
    *,
    inline_images: bool,
    live_version: int | None = None,
    lazy: frozenset[str] = frozenset(),
) -> Page:
    """Render `issue_path` for `channels` and lay the renditions out on one page.

    A source error raises SourceError (the caller decides whether to show it); a channel that
    fails shows its error in its own tab, the others still render.
    """
    issue, warnings = pipeline.load(issue_path)
    ctx = pipeline.context_for(settings, issue)
    images = ImageTable(inline=inline_images, version=live_version)
    panels: list[Panel] = []
    for name in channels:
        if name in lazy:  # not shown: the live page asks for it when its tab is opened
            panels.append(Panel(name, Markup(f'<div class="lazy" data-lazy="{escape(name)}">rendering…</div>')))
            continue
        try:
            rendition = pipeline.render(issue, name, settings, ctx)

            def rerender(overrides: dict, name: str = name):
                changed = settings_with(settings, name, overrides)
                return pipeline.render(issue, name, changed, pipeline.context_for(changed, issue, entries=ctx.archive))

            panels.append(Panel(name, panel(rendition, settings, images, ctx.base_dir, ctx.env, rerender)))
        except PublisherError as exc:
            panels.append(Panel(name, _error_block(str(exc).splitlines(), f"{name}: cannot render"), ok=False))
        except Exception as exc:  # a channel bug: show it, keep the other channels
            tb = traceback.format_exception_only(type(exc), exc)
            panels.append(Panel(name, _error_block([line.rstrip() for line in tb], f"{name}: internal error"), ok=False))
    notes = [str(w) for w in warnings]
    notes += [f"{channel}: image not found next to the issue: {ref}" for channel, ref in images.missing]
    title = f"{issue.title} — preview"
    html_text = _layout(title, str(issue_path), panels, notes, live_version)
    return Page(html_text, images.blobs, True, images.frames)


def settings_with(settings, table: str, overrides: dict):
    """`settings` with some keys of one table changed (a preview variant)."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in settings.data.items()}
    data[table] = {**data.get(table, {}), **overrides}
    return dataclasses.replace(settings, data=data)


def error_page(issue_path: Path, exc: PublisherError, live_version: int | None) -> Page:
    if isinstance(exc, SourceError):
        lines = [str(d) for d in exc.diagnostics if d.level == "error"]
    else:
        lines = str(exc).splitlines()
    body = _error_block(lines, "The issue cannot be rendered")
    html_text = _layout("preview: error", str(issue_path), [], [], live_version, error=body)
    return Page(html_text, [], False)


PAGE = "preview/page.html"  # with preview/preview.css and preview/preview.js (templates/preview/)


def _layout(
    title: str,
    issue_file: str,
    panels: list[Panel],
    notes: list[str],
    live_version: int | None,
    *,
    error: Markup | None = None,
) -> str:
    from publisher.channels.base import builtin_env

    return builtin_env().get_template(PAGE).render(
        title=title, issue_file=issue_file, panels=panels, notes=notes, live_version=live_version, error=error,
        served=live_version is not None)


def page_asset(name: str) -> tuple[bytes, str] | None:
    """The served page's own stylesheet or script (templates/preview/), by file name."""
    from publisher.channels.base import builtin_env

    types = {"preview.css": "text/css; charset=utf-8", "preview.js": "text/javascript; charset=utf-8"}
    if name not in types:
        return None
    return builtin_env().get_template(f"preview/{name}").render().encode("utf-8"), types[name]


# --------------------------------------------------------------------------------------------
# the live server


class LivePreview:
    """Re-renders on change and holds the current page for the server; thread-safe."""

    def __init__(
        self,
        load_settings: Callable[[], object],
        issue_path: Path,
        channels: list[str] | None,
        *,
        follow_newest: bool = False,
    ):
        self._load_settings = load_settings
        self.issue_path = issue_path
        self.follow_newest = follow_newest  # switch to a newer issue file when one appears
        self._issues_folder: Path | None = None
        self._channels = channels
        self.version = 0
        self.page: Page | None = None
        self._recent: dict[int, Page] = {}  # the last KEEP_PAGES versions, for their frames and images
        self.render_seconds = 0.0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._snapshot: dict[str, tuple[int, int] | None] = {}
        self.shown: str | None = None  # the tab on screen (the page reports it)
        self._render_lock = threading.Lock()
        self._watch: list[Path] = []

    def watched_files(self, settings) -> list[Path]:
        from publisher.channels.base import shipped_template_folders

        files = [self.issue_path]
        if getattr(settings, "file", None) is not None:
            files.append(Path(settings.file))
        folders = shipped_template_folders()
        user = settings.path("paths", "templates")
        if user is not None:
            folders.append(user)
        for folder in folders:
            if folder.is_dir():
                files.extend(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        return files

    def _stat(self, files: list[Path] | None = None) -> dict[str, tuple[int, int] | None]:
        snap = {}
        for p in self._watch if files is None else files:
            try:
                st = p.stat()
                snap[str(p)] = (st.st_mtime_ns, st.st_size)
            except OSError:
                snap[str(p)] = None
        return snap

    def rebuild(self) -> None:
        with self._render_lock:  # the watcher and a tab switch (/show) may ask at once
            self._rebuild()

    def _rebuild(self) -> None:
        start = time.perf_counter()
        version = self.version + 1
        before = self._stat()  # taken first: a save during the render triggers another one
        settings = None
        try:
            settings = self._load_settings()
            if self.follow_newest:
                self._issues_folder = settings.path("paths", "issues")
                self.issue_path = pipeline.newest_issue(settings).resolve()
            channels = self._channels or settings.enabled_channels
            # only the channel on screen is rendered; another tab is rendered when it is opened
            shown = self.shown if self.shown in channels else channels[0]
            lazy = frozenset(channels) - {shown}
            page = build_page(settings, self.issue_path, channels, inline_images=False, live_version=version,
                              lazy=lazy)
        except PublisherError as exc:
            page = error_page(self.issue_path, exc, version)
        if settings is not None:
            self._watch = self.watched_files(settings)
        elif not self._watch:
            self._watch = [self.issue_path]
        added = [p for p in self._watch if str(p) not in before]
        self._snapshot = {str(p): before.get(str(p)) for p in self._watch} | self._stat(added)
        self.render_seconds = time.perf_counter() - start
        with self._cond:
            self.page = page
            self._recent[version] = page
            self._recent.pop(version - KEEP_PAGES, None)
            self.version = version
            self._cond.notify_all()

    def changed(self) -> bool:
        if self.follow_newest and self._issues_folder is not None:
            newest = max((p.name for p in self._issues_folder.glob("*.md")
                          if pipeline.ISSUE_FILE_RE.match(p.name)), default=None)
            if newest is not None and newest != self.issue_path.name:
                return True
        return self._stat() != self._snapshot

    def watch_dirs(self) -> list[Path]:
        """The folders whose entries hold the watched files (and, following the newest issue, the
        issues folder): every folder of a template tree, each watched on its own (not recursively,
        so a config beside a big project tree costs nothing)."""
        dirs = {p.parent for p in self._watch} | {self.issue_path.parent}
        if self._issues_folder is not None:
            dirs.add(self._issues_folder)
        return sorted(d for d in dirs if d.is_dir())

    def watch(self) -> None:
        """Re-render on every change the kernel reports (inotify, through watchfiles): no polling.

        An event only wakes the watcher; the files' stat snapshot decides (`changed()`), so an
        event for an unrelated file in a watched folder costs a few stat calls. When a render
        changes what is watched (a new template folder in the config), the watch restarts."""
        from watchfiles import watch

        while not self._stop.is_set():
            dirs = self.watch_dirs()
            for _changes in watch(*dirs, stop_event=self._stop, debounce=WATCH_DEBOUNCE_MS, step=WATCH_STEP_MS,
                                  recursive=False, raise_interrupt=False):
                if self.changed():
                    self.rebuild()
                if self.watch_dirs() != dirs:
                    break

    def show(self, channel: str) -> bool:
        """The page switched to `channel`'s tab: render it (False when the page has no such tab)."""
        page = self.page
        if page is None or f'data-lazy="{escape(channel)}"' not in page.html:
            return False
        self.shown = channel
        self.rebuild()
        return True

    def page_for(self, version: str | None) -> Page | None:
        """The page of `version` (a recent one; the current page without a version)."""
        if not version:
            return self.page
        try:
            return self._recent.get(int(version))
        except ValueError:
            return None

    def wait_for_change(self, seen: int, timeout: float) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self.version != seen or self._stop.is_set(), timeout)
            return self.version

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()


LOCAL_NAMES = ("localhost", "127.0.0.1", "[::1]")


def own_host(host: str, bound: tuple) -> bool:
    """Whether a Host header names this server: localhost, 127.0.0.1, [::1] or the bound address,
    with the bound port (no port only when it is 80); any other name is refused."""
    address, port = bound[0], bound[1]
    names = set(LOCAL_NAMES)
    if address not in ("0.0.0.0", "::"):
        names.add(f"[{address}]" if ":" in address else address)
    host = host.strip().lower()
    name, sep, given = host.rpartition(":") if not host.endswith("]") else (host, "", "")
    if not sep:
        name, given = host, ""
    if given:
        return name in names and given.isdigit() and int(given) == port
    return name in names and port == 80


def make_handler(live: LivePreview) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "publisher-preview"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes, content_type: str, policy: str | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            if policy:
                self.send_header("Content-Security-Policy", policy)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self) -> None:
            self.do_GET()

        def _host_refused(self) -> bool:
            """DNS rebinding: a page of another site whose name now resolves to 127.0.0.1 reaches
            this server with its own name in Host. Only our own names are answered."""
            host = self.headers.get("Host")
            if host is None or len(self.headers.get_all("Host") or ()) != 1:
                self._send(HTTPStatus.BAD_REQUEST, b"exactly one Host header is required", "text/plain")
                return True
            if not own_host(host, self.server.server_address):
                self._send(HTTPStatus.FORBIDDEN, b"unknown Host: open the address the preview printed",
                           "text/plain")
                return True
            return False

        def do_GET(self) -> None:
            if self._host_refused():
                return
            path = urlsplit(self.path).path
            try:
                if path in ("/", "/index.html"):
                    page = live.page
                    assert page is not None
                    self._send(200, page.html.encode("utf-8"), "text/html; charset=utf-8", PAGE_POLICY)
                elif path.startswith("/frame/"):  # a rendition's document, in its sandboxed iframe
                    page = live.page_for(parse_qs(urlsplit(self.path).query).get("v", [""])[0])
                    document = page.frames.get(unquote(path[len("/frame/"):])) if page else None
                    if document is None:
                        self._send(404, b"no such frame", "text/plain")
                        return
                    self._send(200, document.encode("utf-8"), "text/html; charset=utf-8", CONTENT_POLICY)
                elif path in ("/preview.css", "/preview.js"):
                    body, content_type = page_asset(path[1:])
                    self._send(200, body, content_type)
                elif path.startswith("/image/"):
                    page = live.page_for(parse_qs(urlsplit(self.path).query).get("v", [""])[0])
                    try:
                        blob = page.images[int(path.rsplit("/", 1)[1])]
                    except (ValueError, IndexError, AttributeError):
                        self._send(404, b"no such image", "text/plain")
                        return
                    self._send(200, blob.data, blob.media_type)
                elif path == "/events":
                    tab = parse_qs(urlsplit(self.path).query).get("tab", [""])[0]
                    if tab:
                        live.shown = tab
                    self._events()
                elif path == "/show":
                    tab = parse_qs(urlsplit(self.path).query).get("tab", [""])[0]
                    # a tab rendered meanwhile (two asks crossing a new version) is no error
                    page = live.page
                    ok = live.show(tab) or (page is not None and f'data-tab="{escape(tab)}"' in page.html)
                    self._send(200 if ok else 404, b"ok" if ok else b"no such tab", "text/plain")
                elif path == "/version":
                    self._send(200, json.dumps({"version": live.version}).encode(), "application/json")
                else:
                    self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _events(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            seen = live.version
            self.wfile.write(f"retry: 500\ndata: {seen}\n\n".encode())
            self.wfile.flush()
            while not live.stopped:
                now = live.wait_for_change(seen, timeout=15)
                if live.stopped:
                    break
                if now != seen:
                    seen = now
                    self.wfile.write(f"data: {now}\n\n".encode())
                else:
                    self.wfile.write(b": ping\n\n")
                self.wfile.flush()

    return Handler


class PreviewServer(ThreadingHTTPServer):
    """Each connection's thread is kept with its socket, so that stopping can close every open
    connection (an SSE stream, a browser's idle keep-alive, a request not sent yet) and join its
    thread: nothing of the preview is left running while the interpreter shuts down."""

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False  # close_all() does it, with a bound

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._open: dict[socket.socket, threading.Thread] = {}
        self._open_lock = threading.Lock()
        self.closing = False

    def process_request(self, request, client_address) -> None:
        thread = threading.Thread(target=self.process_request_thread, args=(request, client_address),
                                  name="preview-http", daemon=True)
        with self._open_lock:
            self._open[request] = thread
        thread.start()

    def shutdown_request(self, request) -> None:
        with self._open_lock:
            self._open.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        if not self.closing:  # a connection cut by close_all() is no error
            super().handle_error(request, client_address)

    def close_all(self, timeout: float) -> bool:
        """Cut every open connection and wait up to `timeout` s for their threads; True when all
        ended. Call after LivePreview.stop() (which ends the SSE streams' waits)."""
        self.closing = True
        with self._open_lock:
            open_now = list(self._open.items())
        for sock, _ in open_now:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for _, thread in open_now:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for _, thread in open_now)


def start_server(live: LivePreview, port: int, host: str = "127.0.0.1") -> PreviewServer:
    try:
        server = PreviewServer((host, port), make_handler(live))
    except OSError as exc:
        raise PreviewError(
            f"cannot listen on {host}:{port}: {exc.strerror}; pick another with --port or [preview] port"
        ) from None
    return server


def serve(live: LivePreview, port: int, *, open_browser: bool, say: Callable[[str], None] = print) -> None:
    """Serve the live preview until Ctrl-C; `say` gets the lines for the person at the terminal.

    On Ctrl-C it returns only once its own threads are gone (each bounded by STOP_SECONDS): the
    watcher leaves watchfiles' Rust loop at its next step, every connection is cut and its thread
    joined. A daemon thread still inside the extension when the interpreter finalizes is what
    could keep the process from exiting."""
    live.rebuild()
    server = start_server(live, port)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    watcher = threading.Thread(target=live.watch, name="preview-watch", daemon=True)
    try:
        watcher.start()
        follow = " (follows the newest issue)" if live.follow_newest else ""
        say(f"Preview of {live.issue_path}{follow} at {url}")
        say("Watching the issue, the config and the templates; Ctrl-C to stop.")
        if open_browser:
            webbrowser.open(url)
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        live.stop()  # the watcher's stop event, and every SSE stream's wait
        server.server_close()
        server.close_all(STOP_SECONDS)
        if watcher.is_alive():
            watcher.join(STOP_SECONDS)  # at most the end of a render in progress
        say("preview stopped")


# --------------------------------------------------------------------------------------------
# the file


def resolve_channels(settings, channel: str | None) -> list[str] | None:
    from publisher.channels.base import get_channel

    if channel is None:
        return None
    get_channel(channel)  # ConfigError naming the available channels
    return [channel]


def write_preview(settings, issue_path: Path, channels: list[str]) -> Path:
    page = build_page(settings, issue_path, channels, inline_images=True)
    out = settings.path("paths", "out")
    if out is None:
        raise ConfigError(f"[paths] out is not set: set it in {settings.where()}")
    folder = out / "preview"
    folder.mkdir(parents=True, exist_ok=True)
    stem = issue_path.stem if len(channels) != 1 else f"{issue_path.stem}-{channels[0]}"
    target = folder / f"{stem}.html"
    atomic_write(target, page.html)
    return target


__all__ = [
    "Diagnostic",
    "LivePreview",
    "Page",
    "PreviewError",
    "build_page",
    "error_page",
    "serve",
    "start_server",
    "write_preview",
]
