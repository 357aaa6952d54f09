"""The channel contract: an Issue in, a Rendition out. Channels never do I/O.

A channel is one class (found through the `publisher.channels` entry-point group, built-in and
third-party alike) that declares everything the rest of the program needs to know about it, the
way a Sphinx builder registers itself and its config values:

- `name`, and the `media_type` and file `extension` of what it produces, and `render()`;
- `transport`: "module:Class" of the Transport that delivers its renditions (None: render only);
- `config`: TOML text of the config tables it adds, whose defaults double as their schema;
  `path_keys`, `header_keys` and `identity_keys`: the keys of its own table (`[<name>]`) that are
  file paths, reach mail headers, or are the newsletter's identity (publisher/settings.py);
- `template_folder`: where its templates live, when they are not among the built-in ones
  (mounted as `<name>/`, so a user's template folder overrides them like any other);
- `preview()`: its own tab of `publisher preview` (a template of its folder; by default its
  output rendered beside its source);
- `check()`: its platform limits, as Violations (see publisher/limits.py);
- `mails_subscribers`: True for the one channel whose table the mail stack reads (the subscriber
  list, sender, unsubscribe URL; publisher/registry.py `mail_channel`);
- what a rendition reads, which is what `publisher build` fingerprints: `archive_slice()` (the
  part of the archive it shows — the context it renders with holds only that), `reads_sources`
  (whether it reads the sources of that slice's issues too, through `RenderContext.load`),
  `reads_config` (config tables besides its own) and its templates (`<name>/…` in every
  template folder).

No code outside the channel's own module is keyed by its name.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import jinja2

from publisher.errors import ConfigError
from publisher.model import Issue
from publisher.refs import describe_char, forbidden_char, image_bytes
from publisher.registry import ENTRY_POINT_GROUP, available_channels, load_channel  # noqa: F401 (the contract's API)

if TYPE_CHECKING:
    from publisher.limits import Violation
    from publisher.settings import Settings



@dataclass(frozen=True)
class LocalImage:
    """An image the rendition references by `ref` (exactly as written in the body).

    Either `path` (a file next to the issue) or `data` (bytes the channel generated in memory,
    e.g. the QR code made with segno) is set. Transports upload or copy it and replace `ref`.
    """

    ref: str
    path: Path | None = None
    role: str = "inline"  # "inline", "cover" or "qr"
    data: bytes | None = None
    media_type: str = "image/png"
    source: str | None = None  # the path as the issue wrote it, when `ref` differs (web: under <date>/)

    def read(self) -> bytes:
        """The image's bytes; a SourceError when the file is not an image by name and content
        (refs.image_bytes): no transport ever publishes or uploads anything else."""
        if self.data is not None:
            return self.data
        assert self.path is not None
        return image_bytes(self.path, self.source or self.ref)


@dataclass(frozen=True)
class Rendition:
    """What a channel hands to a transport: body, media type, platform metadata, local images."""

    channel: str
    issue: str  # the issue's slug (its date)
    body: str
    media_type: str
    filename: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    images: tuple[LocalImage, ...] = ()
    # further files belonging to the rendition: name -> text (email's text part and .eml, …)
    parts: Mapping[str, str] = field(default_factory=dict)
    binary_parts: Mapping[str, bytes] = field(default_factory=dict)
    # a channel that posts several messages (Telegram's 4,096-character limit): each one in order,
    # in `media_type`; the body is then all of them, for reading. Checks and transports use these.
    messages: tuple[str, ...] = ()

    def message_files(self) -> dict[str, str]:
        """Each message as a file of its own (`render --out`, `build`): <issue>.<n><extension>."""
        stem, dot, ext = self.filename.rpartition(".")
        width = len(str(len(self.messages)))
        return {f"{stem}.{n:0{width}d}.{ext}" if dot else f"{self.filename}.{n:0{width}d}": text
                for n, text in enumerate(self.messages, 1)}

    def __post_init__(self) -> None:
        """No rendition carries a character an XML feed or an HTML page cannot (refs.forbidden_char):
        the reader refuses them in sources, and this catches the configuration and templates."""
        for where, text in (("its body", self.body), *((f"its part {n}", t) for n, t in self.parts.items()),
                            *((f"its {k}", v) for k, v in _metadata_strings(self.metadata))):
            m = forbidden_char(text) if isinstance(text, str) else None
            if m:
                line = text.count("\n", 0, m.start()) + 1
                raise ConfigError(
                    f"the {self.channel} rendition of {self.issue} would carry the invisible character "
                    f"{describe_char(m.group(0))} in {where} (line {line}), which feeds and web pages cannot "
                    f"carry; the issue's text is checked when it is read, so it comes from the configuration "
                    f"(a TOML escape such as \\b or \\u0008) or a template: remove it")


def _metadata_strings(value, key: str = "metadata"):
    """(key, string) for every string in a rendition's metadata, at any depth."""
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _metadata_strings(v, str(k))
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _metadata_strings(v, key)


@dataclass(frozen=True)
class PastIssue:
    """An entry of the archive: enough for 往期回顾 lists and calendars."""

    date: dt.date
    title: str
    path: Path | None = field(default=None, compare=False)  # its source, when it has one

    @property
    def slug(self) -> str:
        return self.date.isoformat()


@dataclass
class RenderContext:
    """Everything a channel may read besides the issue: configuration, templates, the archive."""

    settings: Settings
    archive: tuple[PastIssue, ...] = ()  # every issue in the issues folder, newest first
    base_dir: Path | None = None  # directory of the issue source (for relative images)
    date: dt.date | None = None  # the issue's date: a channel sees only its archive_slice() of it
    shared_env: jinja2.Environment | None = field(default=None, repr=False)  # reuse compiled templates

    def __post_init__(self) -> None:
        self._env: jinja2.Environment | None = self.shared_env
        self._loaded: dict[dt.date, Issue] = {}

    def for_channel(self, cls: type[Channel]) -> RenderContext:
        """This context as channel `cls` sees it: the archive cut to the slice it declares, so a
        rendition reads no more of the archive than its build fingerprint holds."""
        if self.date is None:
            return self
        return RenderContext(self.settings, tuple(cls.archive_slice(self.date, self.archive)), self.base_dir,
                             self.date, shared_env=self.env)

    @property
    def env(self) -> jinja2.Environment:
        if self._env is None:
            self._env = template_env(self.settings)
        return self._env

    def past_issues(self, before: dt.date, limit: int | None = None) -> list[PastIssue]:
        past = [p for p in self.archive if p.date < before]
        return past[:limit] if limit else past

    def load(self, past: PastIssue) -> Issue:
        """Another issue of the archive, read from its source (once), for channels whose output
        spans the archive (a feed with full content). A source error names its file and line."""
        if past.date not in self._loaded:
            if past.path is None:
                raise ConfigError(f"issue {past.slug} of the archive has no source file to read")
            from publisher.reader import read_issue

            self._loaded[past.date] = read_issue(past.path).issue
        return self._loaded[past.date]


def builtin_templates() -> Path:
    """The folder of the built-in templates (inside the installed package)."""
    return Path(str(resources.files("publisher.templates")))


BUILTIN_PREFIX = "!builtin"


def template_env(settings: Settings) -> jinja2.Environment:
    """User template folder first, then the built-in templates and those of third-party channels;
    autoescape on for HTML.

    Every template the program ships is also reachable as `!builtin/<channel>/<file>`, so a user's
    override can `{% extends "!builtin/github/footer.md" %}` and change one block instead of
    copying the file (Pelican's `!simple/` prefix)."""
    loaders: list[jinja2.BaseLoader] = []
    user = settings.path("paths", "templates")
    if user is not None:
        if not user.is_dir():
            raise ConfigError(f"[paths] templates: folder {user} does not exist (set in {settings.where()})")
        loaders.append(jinja2.FileSystemLoader(str(user)))
    shipped = _shipped_loader()
    loaders.append(shipped)
    loaders.append(jinja2.PrefixLoader({BUILTIN_PREFIX: shipped}))
    env = _environment(jinja2.ChoiceLoader(loaders))
    env.globals["newsletter"] = settings["newsletter"]
    return env


@cache
def builtin_env() -> jinja2.Environment:
    """The built-in templates alone, for the pages the program shows whatever the configuration
    (the preview page, which must render even when the config does not load)."""
    return _environment(_shipped_loader())


def _shipped_loader() -> jinja2.BaseLoader:
    """The templates the program ships: the pages of the program, then each channel's own folder
    (`<channel>/…`)."""
    return jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(builtin_templates())),
                                jinja2.PrefixLoader(_ChannelTemplateFolders())])


def shipped_template_folders() -> list[Path]:
    """Every folder of shipped templates: the program's pages and each installed channel's."""
    folders = [builtin_templates()]
    for name in available_channels():
        folder = get_channel(name).template_folder
        if folder is not None:
            folders.append(Path(folder))
    return folders


def _environment(loader: jinja2.BaseLoader) -> jinja2.Environment:
    return jinja2.Environment(
        loader=loader,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "htm", "xml"), default=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


class _ChannelTemplateFolders(Mapping[str, jinja2.BaseLoader]):
    """`<channel>/…` → that channel's own template folder, looked up (and its class loaded) only
    when a template under that prefix is asked for."""

    def __getitem__(self, name: str) -> jinja2.BaseLoader:
        if name not in available_channels():
            raise KeyError(name)
        folder = get_channel(name).template_folder
        if folder is None:
            raise KeyError(name)
        return jinja2.FileSystemLoader(str(folder))

    def __iter__(self):
        return iter(n for n in available_channels() if get_channel(n).template_folder is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def license_of(issue: Issue, settings: Settings):
    """The license an issue is published under: its own (old issues) or the configured one."""
    from publisher.model import License

    if issue.license is not None:
        return issue.license
    n = settings["newsletter"]
    return License(n["license_name"], n["license_url"], n["license_badge"])


class Channel:
    """Base of every channel. Subclasses set the class attributes and implement `render`."""

    name: ClassVar[str]
    media_type: ClassVar[str]
    extension: ClassVar[str]
    transport: ClassVar[str | None] = None  # "package.module:TransportClass"
    config: ClassVar[str] = ""  # TOML: the tables this channel adds, with their defaults
    # Keys of its own table ([<name>], declared in `config`) that the configuration treats specially
    # (publisher/settings.py): file paths, resolved against the folder of the file that sets them;
    # values that reach mail headers, key -> (check or None, what it must be), refused at load when
    # they hold CR/LF/NUL or fail the check; the newsletter's identity, whose shipped example values
    # `push` refuses (Settings.require_own_identity).
    path_keys: ClassVar[tuple[str, ...]] = ()
    header_keys: ClassVar[Mapping[str, tuple[Callable[[str], Any] | None, str]]] = {}
    identity_keys: ClassVar[tuple[str, ...]] = ()
    template_folder: ClassVar[str | Path | None] = None  # None: its templates are built in
    reads_config: ClassVar[tuple[str, ...]] = ("newsletter",)  # tables read besides its own
    # True: a rendition reads the source of every issue of its archive_slice() (RenderContext.load),
    # not only its date and title, so `publisher build` fingerprints those sources too
    reads_sources: ClassVar[bool] = False
    # True: this class replaces another distribution's channel of the same name (publisher/registry.py)
    override: ClassVar[bool] = False
    # True: this channel mails the subscribers (publisher.registry.mail_channel): the subscriber
    # list, the subscribe and unsubscribe pages and bounce processing read its config table
    mails_subscribers: ClassVar[bool] = False

    @classmethod
    def archive_slice(cls, date: dt.date, archive: Sequence[PastIssue]) -> Sequence[PastIssue]:
        """The part of the archive (newest first) that a rendition of the issue of `date` shows.

        Its render context holds only this slice, and `publisher build` re-renders the rendition
        when the slice changes — so adding a newer issue leaves older renditions alone. Default:
        every issue up to and including `date` (a calendar as of this issue)."""
        return [p for p in archive if p.date <= date]

    @classmethod
    def config_reads(cls) -> tuple[str, ...]:
        """The config tables a rendition depends on: `reads_config`, the table named like the
        channel and the tables it declares in `config`."""
        return tuple(dict.fromkeys([*cls.reads_config, cls.name, *cls.config_tables()]))

    @classmethod
    def template_folders(cls, settings: Settings) -> list[Path]:
        """Every folder a template of this channel (`<name>/…`) can come from, the user's first."""
        folders = []
        user = settings.path("paths", "templates")
        if user is not None:
            folders.append(user / cls.name)
        folders.append(builtin_templates() / cls.name)
        if cls.template_folder is not None:
            folders.append(Path(cls.template_folder))
        return folders

    @classmethod
    def check(cls, rendition: Rendition) -> list[Violation]:
        """The platform's limits that `rendition` breaks (none by default)."""
        return []

    @classmethod
    def preview(cls, rendition: Rendition, view: Any) -> Any:
        """Its tab of `publisher preview`, as markup (`view`: publisher.preview.PanelView, which
        makes images loadable, frames documents and renders the channel's templates); None: the
        rendition is shown rendered beside its source."""
        return None

    @classmethod
    def transport_class(cls) -> type:
        """The Transport that delivers this channel's renditions."""
        if not cls.transport:
            raise ConfigError(f"channel '{cls.name}' has no transport: it can be rendered and built, not pushed")
        module, _, attr = cls.transport.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"channel '{cls.name}': its transport {cls.transport!r} cannot be loaded: {exc}") from None

    @classmethod
    def config_tables(cls) -> dict[str, dict[str, Any]]:
        """The tables of `config`, parsed (an invalid declaration is the channel author's error)."""
        if not cls.config:
            return {}
        try:
            tables = tomllib.loads(cls.config)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"channel '{cls.name}' declares invalid config TOML: {exc}") from None
        if not all(isinstance(t, dict) for t in tables.values()):
            raise ConfigError(f"channel '{cls.name}': its config must be TOML tables")
        return tables

    def __init__(self, ctx: RenderContext):
        # a channel rendered without being enabled (`render --channel NAME`) still sees the
        # defaults of the config tables it declares
        missing = {t: d for t, d in self.config_tables().items() if t not in ctx.settings.data}
        if missing:
            ctx.settings = dataclasses.replace(ctx.settings, data={**ctx.settings.data, **missing})
        self.ctx = ctx
        self.settings = ctx.settings

    def render(self, issue: Issue) -> Rendition:  # pragma: no cover - abstract
        raise NotImplementedError

    def filename(self, issue: Issue) -> str:
        return f"{issue.slug}{self.extension}"


def check_rendition(r: Rendition) -> list[Violation]:
    """Every limit of the rendition's channel, as the channel declares them (`Channel.check`)."""
    return get_channel(r.channel).check(r)


def get_channel(name: str) -> type[Channel]:
    cls = load_channel(name)
    if not issubclass(cls, Channel):
        raise ConfigError(f"entry point '{name}' in group {ENTRY_POINT_GROUP} is not a Channel subclass")
    return cls
