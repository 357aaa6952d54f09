"""Transports: how each channel's rendition reaches its platform.

TRANSPORTS maps a channel name to "module:Class"; modules are imported only when used.
"""

from __future__ import annotations

import importlib

from publisher.errors import ConfigError

TRANSPORTS = {
    "email": "publisher.transports.email:EmailTransport",
    "wechat": "publisher.transports.wechat:WeChatTransport",
    "github": "publisher.transports.git:GitTransport",
    "zhihu": "publisher.transports.outbox:OutboxTransport",
    "aijishu": "publisher.transports.outbox:OutboxTransport",
    "plaintext": "publisher.transports.outbox:OutboxTransport",
}


def get_transport(channel: str):
    """The transport class for a channel."""
    if channel not in TRANSPORTS:
        raise ConfigError(f"no transport for channel '{channel}'; channels with one: {', '.join(TRANSPORTS)}")
    module, attr = TRANSPORTS[channel].split(":")
    return getattr(importlib.import_module(module), attr)
