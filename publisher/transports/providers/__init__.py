"""Email through a provider's HTTP API ([email] transport = "ses" | "postmark" | "mailgun").

One module per provider (ses.py, postmark.py, mailgun.py), each a `Provider` (base.py: the
batch-sender interface); campaign.py sends an issue through whichever is configured, with the
exactly-once bookkeeping of publisher/stores/batches.py.
"""

from __future__ import annotations

from publisher.errors import ConfigError
from publisher.registry import mail_channel, mail_table

TRANSPORTS = ("smtp", "ses", "postmark", "mailgun")


def provider_name(settings) -> str:
    """[email] transport, checked: "smtp" or a provider's name."""
    name = mail_table(settings).get("transport", "smtp")
    if name not in TRANSPORTS:
        raise ConfigError(f"[{mail_channel()}] transport must be one of {', '.join(TRANSPORTS)}, got {name!r}: "
                          f"fix it in {settings.where()}")
    return name


def provider_class(name: str):
    if name == "ses":
        from publisher.transports.providers.ses import Ses

        return Ses
    if name == "postmark":
        from publisher.transports.providers.postmark import Postmark

        return Postmark
    if name == "mailgun":
        from publisher.transports.providers.mailgun import Mailgun

        return Mailgun
    raise ConfigError(f"no email provider named {name!r}")


def size_limit(settings) -> tuple[str, int] | None:
    """(provider, its maximum message size in bytes) of the configured transport; None for SMTP."""
    name = provider_name(settings)
    if name == "smtp":
        return None
    return name, provider_class(name).max_message_bytes
