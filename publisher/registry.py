"""The channel registry: every installed channel, found through the `publisher.channels`
entry-point group (built-in and third-party alike), and the one question the core asks of it by
role rather than by name: which channel mails the subscribers.

It lives in the ground so that loading the configuration (publisher/settings.py) and the stores
can ask it; `publisher.channels.base.get_channel` adds the check that a class is a Channel.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points
from typing import Any

from publisher.errors import ConfigError

ENTRY_POINT_GROUP = "publisher.channels"


def _distribution(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"


@cache
def _entry_points() -> dict[str, Any]:
    """Every channel name -> its entry point. A name is claimed once (Sphinx's `add_builder`): two
    installed distributions registering one name is an error naming both, unless exactly one of the
    two classes declares `override = True` (a deliberate replacement, e.g. of a built-in channel)."""
    found: dict[str, Any] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        prev = found.get(ep.name)
        if prev is None or prev.value == ep.value:
            found.setdefault(ep.name, ep)
            continue
        found[ep.name] = _claim(ep.name, prev, ep)
    return found


def _claim(name: str, first: Any, second: Any) -> Any:
    """The one of two entry points for `name` that wins (the one declaring `override = True`)."""
    overriding = [ep for ep in (first, second) if getattr(_load(ep), "override", False) is True]
    if len(overriding) == 1:
        return overriding[0]
    raise ConfigError(
        f"channel '{name}' is registered twice: by {_distribution(first)} ({first.value}) and by "
        f"{_distribution(second)} ({second.value}); uninstall one, or let the replacement declare "
        "`override = True` on its Channel class")


def _load(ep: Any) -> Any:
    try:
        return ep.load()
    except Exception as exc:  # a broken plug-in is named, not a traceback
        raise ConfigError(f"channel '{ep.name}' ({_distribution(ep)}, {ep.value}) cannot be loaded: {exc}") from None


def available_channels() -> list[str]:
    return sorted(_entry_points())


def load_channel(name: str) -> Any:
    """The class registered as channel `name` (a ConfigError naming the available ones if none)."""
    eps = _entry_points()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "(none installed)"
        raise ConfigError(f"unknown channel '{name}'; available channels: {known}")
    cls = _load(eps[name])
    if not (isinstance(cls, type) and callable(getattr(cls, "config_tables", None))):
        raise ConfigError(f"entry point '{name}' in group {ENTRY_POINT_GROUP} is not a Channel subclass")
    return cls


@cache
def mail_channel() -> str:
    """The name of the channel that mails subscribers: the one installed channel whose class
    declares `mails_subscribers = True`. Its config table holds the subscriber list, the sender, the
    list id and the unsubscribe URL that the mail stack (the SMTP and provider transports, the
    subscriber store, the subscribe and unsubscribe pages, bounce processing) reads — the one place
    that says which table that is."""
    found = [name for name in available_channels() if getattr(load_channel(name), "mails_subscribers", False) is True]
    if len(found) != 1:
        which = ", ".join(repr(n) for n in found) or "none does"
        raise ConfigError(f"exactly one installed channel must mail subscribers (declare `mails_subscribers = True` "
                          f"on its Channel class); {which}")
    return found[0]


def mail_table(settings: Any) -> dict[str, Any]:
    """The config table of the channel that mails subscribers (see `mail_channel`)."""
    return settings[mail_channel()]
