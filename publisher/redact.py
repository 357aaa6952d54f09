"""Redaction of secrets, the one rule for every message, log line and ledger field shown to a
person: the values of the environment variables the configuration names (`…_env` keys), the
secrets a caller holds (an AppSecret, an access token), token-like `key=value` parameters and the
password of a URL (`scheme://user:password@host`) become `***`."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable

_SECRET_RE = re.compile(
    r"(?i)((?:access_token|token|secret|appsecret|password|passwd|api_key|apikey)\s*[=:]\s*)[^&\s\"',;]+")
_USERINFO_RE = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@")


def redact(text: str | None, settings=None, *, secrets: Iterable[str | None] = ()) -> str:
    """`text` with every secret masked ("" for None): `secrets`, and with `settings` the values
    of the environment variables its `…_env` keys name (4 characters or more)."""
    if not text:
        return ""
    values = [s for s in secrets if s]
    if settings is not None:
        for section in settings.data.values():
            for key, var in section.items():
                if key.endswith("_env") and isinstance(var, str) and var:
                    value = os.environ.get(var, "")
                    if len(value) >= 4:
                        values.append(value)
    for value in values:
        text = text.replace(value, "***")
    text = _SECRET_RE.sub(r"\1***", text)
    return _USERINFO_RE.sub(r"\1***@", text)


class RedactFilter(logging.Filter):
    """Redacts log records (urllib3 logs request URLs, with their tokens, at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is not ours to fix
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
