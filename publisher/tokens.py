"""The signed parts of a mail: the one signer of unsubscribe tokens and VERP bounce addresses,
shared by the message builder (publisher/mailmsg.py), the SMTP campaign (publisher/transports/),
the endpoint (publisher/unsubscribe.py) and the bounce/complaint processor (publisher/bounces.py).

An unsubscribe token is `base64url(email) "." base64url(HMAC-SHA256(secret, list_id NUL lowercased
email))`; a VERP address is `bounces+ID-YYYYMMDD-MAC@domain`. The secret comes from the environment
variable named by the mail channel's `secret_env`. Nothing is stored: the signature is verified
and names the address.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from urllib.parse import quote

from publisher.errors import ConfigError

# What the mail channel writes where each reader's unsubscribe URL goes; the transports replace it.
UNSUBSCRIBE_PLACEHOLDER = "%%UNSUBSCRIBE_URL%%"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, list_id: str, email: str) -> bytes:
    msg = f"{list_id}\0{email.strip().lower()}".encode()
    return hmac.digest(secret.encode("utf-8"), msg, "sha256")  # one-shot: OpenSSL's HMAC, once a message


def make_token(secret: str, list_id: str, email: str) -> str:
    return f"{_b64(email.encode('utf-8'))}.{_b64(_mac(secret, list_id, email))}"


def verify_token(secret: str, list_id: str, token: str) -> str | None:
    """The email a genuine token names, else None."""
    try:
        head, _, sig = token.partition(".")
        if not head or not sig or len(token) > 1024:
            return None
        email = _unb64(head).decode("utf-8")
        given = _unb64(sig)
    except (ValueError, UnicodeDecodeError):
        return None
    if not hmac.compare_digest(given, _mac(secret, list_id, email)):
        return None
    return email


def unsubscribe_url(template: str, token: str) -> str:
    return template.replace("{token}", quote(token, safe=""))


# -- VERP -------------------------------------------------------------------------------------


def verp_mac(secret: str, list_id: str, issue: str, sub_id: int, email_addr: str) -> str:
    msg = f"verp\0{list_id}\0{issue}\0{sub_id}\0{email_addr.strip().lower()}".encode()
    digest = hmac.new(secret.encode("utf-8"), msg, hashlib.sha256).digest()
    return base64.b32encode(digest).decode("ascii")[:10].lower()  # lower case: MTAs may fold it


def verp_address(base: str, secret: str, list_id: str, issue: str, sub_id: int, email_addr: str) -> str:
    """`bounces+ID-YYYYMMDD-MAC@domain` for base `bounces@domain` (≤ 64 octets of local part)."""
    local, _, domain = base.rpartition("@")
    date = issue.replace("-", "")
    if not re.fullmatch(r"\d{8}", date):
        raise ConfigError(f"VERP needs an issue named by its date (YYYY-MM-DD), got {issue!r}")
    return f"{local}+{sub_id}-{date}-{verp_mac(secret, list_id, issue, sub_id, email_addr)}@{domain}"


def verp_pattern(base: str) -> re.Pattern:
    local, _, domain = base.rpartition("@")
    return re.compile(rf"(?i)(?<![\w.+-]){re.escape(local)}\+(\d{{1,12}})-(\d{{8}})-([a-z2-7]{{10}})@"
                      rf"{re.escape(domain)}(?![\w-])")


def verp_sender(settings, secret: str, list_id: str, issue: str, subs):
    """For a campaign: a function email → MAIL FROM, or None when [bounces] address is not set."""
    base = settings["bounces"]["address"]
    if not base:
        return None
    if base.count("@") != 1 or "+" in base.split("@")[0]:
        raise ConfigError(f"[bounces] address {base!r} must be a plain address like bounces@example.org "
                          f"(no '+'): fix it in {settings.where()}")

    def sender(email_addr: str) -> str:
        sub = subs.get(email_addr)
        if sub is None:  # forgotten mid-campaign: no token can name it
            return base
        return verp_address(base, secret, list_id, issue, sub.id, sub.email)

    return sender
