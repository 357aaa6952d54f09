"""The one rule for an email address, used wherever an address is checked.

An address is accepted when mail to it can be delivered on the public internet, as judged from the
text alone (no DNS lookups): `email-validator` with deliverability checks off. So `ed@localhost`
(no dot in the domain), `ed@ex..org`, `ed@host.test` (a special-use name), quoted or bracketed
forms, display names, CR/LF and anything over 254 characters are refused; an internationalized
address (`用户@例子.cn`) is accepted, and the SMTP transport asks the server for SMTPUTF8 when it
needs it.
"""

from __future__ import annotations

__all__ = ["MAX_LENGTH", "address_problem", "valid_address"]

MAX_LENGTH = 254  # RFC 5321 §4.5.3.1.3: a path is at most 256 octets, its angle brackets included


def address_problem(value: object) -> str | None:
    """Why `value` is not a deliverable email address, or None when it is one."""
    if not isinstance(value, str) or not value:
        return "an address is text like editor@example.org"
    if len(value) > MAX_LENGTH:  # bounded before any parsing
        return f"the address is {len(value):,} characters long; at most {MAX_LENGTH} are allowed"
    if value != value.strip():
        return "the address has spaces around it"
    from email_validator import EmailNotValidError, validate_email  # 60 ms to import: only when asked

    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        return str(exc)
    return None


def valid_address(value: object) -> bool:
    """Whether `value` is a deliverable email address (see `address_problem`)."""
    return address_problem(value) is None
