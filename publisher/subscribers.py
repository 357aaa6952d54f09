"""Email subscribers: a SQLite database ([email] subscribers_db) and `publisher subscribers`.

A subscriber is `pending` (asked through the form, not yet confirmed), `active`, `unsubscribed`
or `bounced`; only active subscribers are mailed, and nothing but the subscriber's own
confirmed request (double opt-in, publisher/subscribe.py) makes an unsubscribed or bounced
address active again — not even a re-import of the same CSV. Consent is recorded in `consent`
(source form/import/api, time, IP, confirmation time). `forget` erases a person and keeps only
a hash of the address in `suppressions`, so a later import does not add it again. Recipients are streamed in id order with keyset pagination (`WHERE id > ? LIMIT n`): no
long read transaction, never the whole list in memory, and an unsubscribe that lands during a
campaign is seen by the next page.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from publisher.errors import Diagnostic
from publisher.stores.mail import MailStore
from publisher.stores.subscribers import (  # noqa: F401 (the subscribers API)
    SCHEMA,
    STATES,
    Subscriber,
    SubscriberDB,
    SubscriberError,
    address_hash,
    scrub,
)

# deliberately simple: one @, no spaces or angle brackets or control characters, a dotted domain
EMAIL_RE = re.compile(r"^[^@\s<>()\[\],;:\"\\]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")


def valid_email(address: str) -> bool:
    return bool(EMAIL_RE.match(address)) and len(address) <= 254


def open_db(settings) -> SubscriberDB:
    from publisher.stores import open_subscribers

    if not settings["database"]["url"] and settings.path("email", "subscribers_db") is None:
        raise SubscriberError(f"[email] subscribers_db is not set: set it in {settings.where()}")
    return open_subscribers(settings)


def open_mail(settings) -> MailStore:
    """The sends and bounce events of the ledger ([paths] ledger)."""
    from publisher.stores import open_ledger

    return MailStore(open_ledger(settings))


def import_csv(db: SubscriberDB, path: Path, *, batch: int = 1000) -> tuple[int, list[Diagnostic]]:
    """Import `email,name[,tags]` rows (a header row is optional). Bad rows are reported with their
    line number and skipped; good rows are imported. Returns (rows imported, diagnostics)."""
    problems: list[Diagnostic] = []
    imported = 0
    pending: list[tuple[str, str, str]] = []
    seen_header = False
    lines: dict[str, int] = {}

    def flush() -> int:
        suppressed = db.add_many(pending)
        for email in suppressed:  # never echo a forgotten address: the line says which row
            problems.append(Diagnostic("warning", "this address was erased with `subscribers forget`; "
                                       "row skipped (it is only added again through the subscribe form)",
                                       str(path), lines[email]))
        n = len(pending) - len(suppressed)
        pending.clear()
        lines.clear()
        return n

    try:
        fh = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise SubscriberError(f"cannot read {path}: {exc.strerror}") from None
    with fh:
        reader = csv.reader(fh)
        try:
            for row in reader:
                line = reader.line_num
                if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
                    continue
                cells = [c.strip() for c in row]
                if not seen_header and imported == 0 and not pending and cells[0].lower() in ("email", "e-mail"):
                    seen_header = True
                    continue
                if len(cells) > 3:
                    problems.append(Diagnostic("error", f"{len(cells)} columns; expected email,name[,tags] "
                                               "(quote a name or tags that contain a comma)", str(path), line))
                    continue
                email = cells[0]
                name = cells[1] if len(cells) > 1 else ""
                tags = cells[2] if len(cells) > 2 else ""
                if not valid_email(email):
                    problems.append(Diagnostic("error", f"not an email address: {email!r}; row skipped",
                                               str(path), line))
                    continue
                if any(ch in name for ch in "\r\n"):
                    problems.append(Diagnostic("error", "name contains a line break; row skipped", str(path), line))
                    continue
                pending.append((email, name, tags))
                lines[email] = line
                if len(pending) >= batch:
                    imported += flush()
        except UnicodeDecodeError as exc:
            raise SubscriberError(f"not UTF-8 text ({exc.reason}); save the file as UTF-8 and import again",
                                  file=path, line=reader.line_num + 1) from None
        except csv.Error as exc:
            raise SubscriberError(f"malformed CSV: {exc}", file=path, line=reader.line_num) from None
    if pending:
        imported += flush()
    return imported, problems
