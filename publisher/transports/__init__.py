"""Transports: how each channel's rendition reaches its platform.

Which transport carries a channel is the channel's own declaration (`Channel.transport`); this
module only resolves it, so a third-party channel brings its own transport the same way.
"""

from __future__ import annotations


def get_transport(channel: str):
    """The transport class for a channel (a ConfigError when it is unknown or has none)."""
    from publisher.channels.base import get_channel

    return get_channel(channel).transport_class()
