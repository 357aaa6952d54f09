"""Configuration: the built-in defaults (config/default.toml, and the tables channels declare in
their `config`) overlaid by the project's file.

Validated on load: an unknown table or key, or a value of the wrong kind, is an error naming the
file and the key. The defaults double as the schema: every key's type is its default's type.
The keys treated specially are the core's below and, for a channel's own table, the ones its class
declares (`path_keys`, `header_keys`, `identity_keys`): this module names no channel.
"""

from __future__ import annotations

import functools
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .refs import is_http
from .registry import available_channels, load_channel

CONFIG_FILENAME = "publisher.toml"
# An issue source in the issues folder: YYYY-MM-DD.md
ISSUE_FILE_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.md$")
ENV_CONFIG = "PUBLISHER_CONFIG"

# Keys of the core's tables whose value is a file system path, resolved against the directory of
# the file that set it (a channel declares its own: `Channel.path_keys`).
PATH_KEYS = {
    ("paths", "issues"),
    ("paths", "out"),
    ("paths", "ledger"),
    ("paths", "templates"),
    ("schedule", "jobstore"),
    ("outbox", "path"),
    ("bounces", "mailbox"),
    ("newsletter", "qr_image"),
}


# A newsletter's identity: what readers see and follow. `push` refuses any of these still equal to
# a shipped example — a placeholder of the built-in defaults or a value of an example profile
# (examples/*/publisher.toml, shipped as package data) — naming the key.
IDENTITY_KEYS = (
    ("newsletter", "editor_url"), ("newsletter", "project_url"), ("newsletter", "archive_url"),
    ("newsletter", "license_badge"), ("newsletter", "qr_public_url"), ("newsletter", "qr_target"),
    ("newsletter", "image_base_url"), ("subscribe", "url"), ("subscribe", "confirm_url"),
)  # and every channel's `identity_keys`


def _channel_keys(cls: Any, kind: str) -> list[tuple[str, str]]:
    """(table, key) of every key a channel class declares as `kind` (path_keys, header_keys,
    identity_keys): keys of its own table, which its `config` must declare."""
    keys = list(getattr(cls, kind, ()) or ())
    own = cls.config_tables().get(cls.name, {}) if keys else {}
    missing = [k for k in keys if k not in own]
    if missing:
        raise ConfigError(f"channel '{cls.name}' declares {kind} {', '.join(missing)} that its config table "
                          f"[{cls.name}] does not have: declare them in its `config` TOML")
    not_text = [k for k in keys if not isinstance(own[k], str)]
    if not_text:
        raise ConfigError(f"channel '{cls.name}' declares {kind} {', '.join(not_text)} whose default in "
                          f"[{cls.name}] is not a string: a path, a header value or an identity is text")
    return [(cls.name, k) for k in keys]


def identity_defaults() -> dict[tuple[str, str], Any]:
    """Every identity key -> its built-in default: the core's and every installed channel's."""
    core = tomllib.loads(_default_text())
    found = {(s, k): core[s][k] for s, k in IDENTITY_KEYS}
    for name in available_channels():
        cls = load_channel(name)
        tables = cls.config_tables()
        found.update({(s, k): tables[s][k] for s, k in _channel_keys(cls, "identity_keys")})
    return found


def example_profiles() -> list[str]:
    """The text of every example profile the package ships (examples/*/publisher.toml)."""
    folders = resources.files("publisher.examples").iterdir()
    return [f.joinpath(CONFIG_FILENAME).read_text(encoding="utf-8") for f in folders
            if f.joinpath(CONFIG_FILENAME).is_file()]


@functools.lru_cache(maxsize=1)
def shipped_examples() -> dict[tuple[str, str], set]:
    """Every identity value the package ships as an example: (section, key) -> values."""
    profiles = [tomllib.loads(text) for text in example_profiles()]
    found: dict[tuple[str, str], set] = {}
    for (section, key), default in identity_defaults().items():
        values = [default] + [table.get(section, {}).get(key) for table in profiles]
        found[(section, key)] = {v for v in values if v}
    return found


def find_config(start: Path) -> Path | None:
    """publisher.toml in `start` or the nearest folder above it (as git finds .git)."""
    start = start.resolve()
    for folder in (start, *start.parents):
        candidate = folder / CONFIG_FILENAME
        if candidate.is_file():
            return candidate
    return None


def valid_unsubscribe_url(value: str) -> bool:
    """The one rule for the mailing channel's unsubscribe_url: an http(s) URL, no spaces, with a
    {token} slot."""
    return is_http(value) and "{token}" in value and not any(c.isspace() for c in value)


def _check_headers(data: Mapping[str, Mapping[str, Any]], channels: list[Any], where: str) -> None:
    """Values that reach mail headers (the channels' `header_keys`): no CR/LF/NUL (header
    injection) and the syntax of what they are."""
    for cls in channels:
        for table, key in _channel_keys(cls, "header_keys"):  # each declared in its table
            check, what = cls.header_keys[key]
            value = data[table][key]
            if not value:
                continue
            if any(c in value for c in "\r\n\x00") or (check is not None and not check(value)):
                raise ConfigError(f"{where}: [{table}] {key} must be {what}, got {value[:60]!r}")


def _default_text() -> str:
    return resources.files("publisher.defaults").joinpath("default.toml").read_text(encoding="utf-8")


def _kind(value: Any) -> str:
    return {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string",
            list: "a list"}.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class Settings:
    """Validated configuration; `settings["email"]["from_address"]`."""

    data: Mapping[str, Mapping[str, Any]]
    file: Path | None = None  # the project's config file, if any
    root: Path = field(default_factory=Path.cwd)  # directory relative paths are resolved against

    def __getitem__(self, section: str) -> Mapping[str, Any]:
        return self.data[section]

    def where(self) -> str:
        return str(self.file) if self.file else f"{CONFIG_FILENAME} (not found; built-in defaults in use)"

    def path(self, section: str, key: str) -> Path | None:
        """A path-valued key, resolved; None when empty."""
        value = self.data[section][key]
        return Path(value) if value else None

    def require(self, section: str, key: str, why: str = "") -> Any:
        """A value that must be set for the operation at hand, else a ConfigError saying where."""
        value = self.data[section][key]
        if value in ("", None, [], 0) and not isinstance(value, bool):
            reason = f" ({why})" if why else ""
            raise ConfigError(f"[{section}] {key} is not set{reason}: set it in {self.where()}")
        return value

    def secret(self, section: str, key: str) -> str:
        """The secret held in the environment variable that `[section] key` names."""
        var = self.require(section, key)
        value = os.environ.get(var, "")
        if not value:
            raise ConfigError(
                f"environment variable {var} is empty or unset; it holds the secret named by "
                f"[{section}] {key} in {self.where()}: export {var}=…"
            )
        return value

    def issue_files(self) -> list[Path]:
        """Every issue source in [paths] issues, newest first."""
        folder = self.path("paths", "issues")
        if folder is None or not folder.is_dir():
            return []
        return sorted((p for p in folder.iterdir() if ISSUE_FILE_RE.match(p.name)), reverse=True)

    def require_own(self, section: str, key: str, why: str) -> Any:
        """A value that must be the user's own, not the shipped default standing in for it (e.g.
        `newsletter@example.org`) nor an example profile's: a ConfigError naming the key otherwise."""
        value = self.require(section, key, why)
        self._refuse_example(section, key, why)
        return value

    def _refuse_example(self, section: str, key: str, why: str) -> None:
        value = self.data[section][key]
        if value and value in shipped_examples().get((section, key), ()):
            raise ConfigError(f"[{section}] {key} is still the shipped example {value!r}: set your own "
                              f"in {self.where()} ({why})")

    def require_own_identity(self) -> None:
        """Refuse (ConfigError naming the key) any identity value set to a shipped example (an example
        profile's, copied): readers would follow another newsletter's links. A key left at its
        built-in placeholder is refused where it is used instead (`require_own`: email's sender and
        unsubscribe link, serve's confirm link), so a push to github does not need email settings."""
        if self.data["newsletter"]["example_owner"]:
            self._check_example_owner()
            return
        for (section, key), default in identity_defaults().items():
            if section in self.data and self.data[section][key] != default:
                self._refuse_example(section, key, "readers would see it: run `publisher init`, or set "
                                     "your newsletter's own value")

    def _check_example_owner(self) -> None:
        """`[newsletter] example_owner` names the shipped example profile this newsletter is (its
        `name`): only a config that says so, and whose name is that one, may use its values."""
        owner = self.data["newsletter"]["example_owner"]
        names = {tomllib.loads(text).get("newsletter", {}).get("name") for text in example_profiles()}
        if owner not in names or owner != self.data["newsletter"]["name"]:
            raise ConfigError(f"[newsletter] example_owner {owner!r} must be the `name` of a shipped example "
                              f"profile ({', '.join(sorted(n for n in names if n))}) and equal this newsletter's "
                              f"[newsletter] name: fix it in {self.where()}, or remove it (a new newsletter "
                              "never sets it)")

    @property
    def enabled_channels(self) -> list[str]:
        return list(self.data["channels"]["enabled"])


def _merge(base: dict, override: Mapping, *, file: Path, root: Path, path_keys: set) -> None:
    for section, table in override.items():
        if section not in base:
            known = ", ".join(sorted(base))
            raise ConfigError(f"{file}: unknown table [{section}]; known tables: {known}")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{file}: [{section}] must be a table")
        for key, value in table.items():
            if key not in base[section]:
                known = ", ".join(sorted(base[section]))
                raise ConfigError(f"{file}: unknown key [{section}] {key}; keys of [{section}]: {known}")
            default = base[section][key]
            ok = type(value) is type(default) or (isinstance(default, float) and type(value) is int)
            if not ok:
                raise ConfigError(
                    f"{file}: [{section}] {key} must be {_kind(default)}, got {value!r}"
                )
            if (section, key) in path_keys and value:
                value = str((root / Path(value).expanduser()).resolve())
            base[section][key] = value


def _add_channel_tables(data: dict) -> list[Any]:
    """Add to the schema the config tables that every installed channel declares (`Channel.config`),
    enabled or not: the mail stack reads the mailing channel's table whatever is enabled, and
    `push --channel NAME` / `render --channel NAME` work on any installed channel. Returns the
    channel classes."""
    added = []
    for name in available_channels():
        cls = load_channel(name)
        for table, defaults in cls.config_tables().items():
            if data.setdefault(table, defaults) != defaults:
                raise ConfigError(f"channel '{name}' declares the config table [{table}], which another part "
                                  "of publisher defines differently: the channel must use a table of its own")
        added.append(cls)
    return added


def load_settings(path: str | Path | None = None, *, cwd: Path | None = None) -> Settings:
    """Load defaults, then `path` (or $PUBLISHER_CONFIG, or publisher.toml in the working folder or
    the nearest folder above it)."""
    cwd = cwd or Path.cwd()
    data = tomllib.loads(_default_text())
    file: Path | None = None
    if path is None and os.environ.get(ENV_CONFIG):
        path = os.environ[ENV_CONFIG]
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"config file {file} does not exist")
    else:
        file = find_config(cwd)

    root = cwd
    override: dict[str, Any] = {}
    if file is not None:
        root = file.resolve().parent
        try:
            override = tomllib.loads(file.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: invalid TOML: {exc}") from None
    channels = _add_channel_tables(data)
    path_keys = PATH_KEYS | {k for cls in channels for k in _channel_keys(cls, "path_keys")}
    # defaults' relative paths follow the project file's directory (the working one without a file)
    for section, key in path_keys:
        if key not in override.get(section, {}) and data[section][key]:
            data[section][key] = str((root / data[section][key]).resolve())
    if file is not None:
        _merge(data, override, file=file, root=root, path_keys=path_keys)

    _check_headers(data, channels, str(file or "defaults"))
    enabled = data["channels"]["enabled"]
    if any(not isinstance(c, str) for c in enabled):
        raise ConfigError(f"{file or 'defaults'}: [channels] enabled must list channel names")
    known = available_channels()
    unknown = [c for c in enabled if c not in known]
    if unknown:
        raise ConfigError(
            f"{file or 'defaults'}: [channels] enabled: unknown channel {', '.join(map(repr, unknown))}; "
            f"available channels: {', '.join(known) or '(none installed)'}"
        )
    return Settings(data=data, file=file, root=root)
