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

from publisher.addresses import valid_address
from publisher.errors import Diagnostic
from publisher.stores import open_subscribers as open_db  # noqa: F401 (the subscribers API)
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

# the one address rule (publisher.addresses); the name stays for the transports that import it
valid_email = valid_address


def open_mail(settings) -> MailStore:
    """The sends and bounce events of the ledger ([paths] ledger)."""
    from publisher.stores import open_ledger

    return MailStore(open_ledger(settings))


# A cell a spreadsheet would run as a formula (OWASP "CSV injection"): it starts with one of these.
# Export puts a ' before it — and before a cell that is such a cell with quotes already put
# before it, so import can take exactly one ' off again and the round trip is lossless.
_FORMULA_RE = re.compile(r"^'*[=+\-@\t\r]")
CSV_COLUMNS = ("email", "name", "tags", "state")
DELIMITERS = ",;\t"


def escape_cell(value: str) -> str:
    """A CSV cell that no spreadsheet runs as a formula (undone by `unescape_cell`)."""
    return "'" + value if _FORMULA_RE.match(value) else value


def unescape_cell(value: str) -> str:
    return value[1:] if value.startswith("'") and _FORMULA_RE.match(value) else value


def export_rows(db: SubscriberDB, state: str | None):
    """`subscribers export`/`list` rows (email, name, tags, state), formula-escaped; what
    `import_csv` takes back unchanged."""
    for sub in db.iter(state):
        yield [escape_cell(v) for v in (sub.email, sub.name, sub.tags, sub.state)]


def _delimiter(head: str) -> str:
    """The column delimiter of a CSV file from its first data line: `,` unless `;` or a tab
    separates more columns there (spreadsheets in many locales write `;`)."""
    for line in head.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            outside = re.sub(r'"[^"]*"', "", line)
            counts = {d: outside.count(d) for d in DELIMITERS}
            best = max(DELIMITERS, key=lambda d: counts[d])
            return best if counts[best] > counts[","] else ","
    return ","


ROW_HINT = "each line is email,name[,tags[,state]] (a header line `email,name,tags,state` is optional)"


def import_csv(db: SubscriberDB, path: Path, *, batch: int = 1000) -> tuple[int, list[Diagnostic]]:
    """Import `email,name[,tags[,state]]` rows (a header row is optional; `,`, `;` or tab between
    columns, found from the first line). Bad rows are reported with their line number and skipped;
    good rows are imported. The output of `subscribers export` comes back unchanged: formula-escaped
    cells are unescaped, and a `state` other than active (unsubscribed, bounced, pending) is kept —
    an import never makes an address active again. Returns (rows imported, diagnostics)."""
    job = _Import(db, str(path), batch)
    try:
        fh = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise SubscriberError(f"cannot read {path}: {exc.strerror}") from None
    with fh:
        try:
            delimiter = _delimiter(fh.read(65536))
        except UnicodeDecodeError as exc:
            raise SubscriberError(f"not UTF-8 text ({exc.reason}); save the file as UTF-8 and import again",
                                  file=path) from None
        fh.seek(0)
        shown = {",": "','", ";": "';'", "\t": "tab"}[delimiter]
        reader = csv.reader(fh, delimiter=delimiter)
        start = 1
        try:
            for row in reader:
                line, start = start, reader.line_num + 1
                job.row(row, line, reader.line_num, shown)
        except UnicodeDecodeError as exc:
            raise SubscriberError(f"not UTF-8 text ({exc.reason}); save the file as UTF-8 and import again",
                                  file=path, line=start) from None
        except csv.Error as exc:
            raise SubscriberError(f"malformed CSV: {exc}", file=path, line=start) from None
    job.flush()
    db.imported()
    return job.imported, job.problems


class _Import:
    """One import_csv: rows checked one by one, the good ones added `batch` at a time."""

    def __init__(self, db: SubscriberDB, file: str, batch: int) -> None:
        self.db, self.file, self.batch = db, file, batch
        self.problems: list[Diagnostic] = []
        self.imported = 0
        self.pending: list[tuple[str, str, str, str]] = []
        self.lines: dict[str, int] = {}
        self.seen_header = False

    def flush(self) -> None:
        if not self.pending:
            return
        suppressed = self.db.add_many(self.pending)
        for email in suppressed:  # never echo a forgotten address: the line says which row
            self.problems.append(Diagnostic("warning", "this address was erased with `subscribers forget`; "
                                            "row skipped (it is only added again through the subscribe form)",
                                            self.file, self.lines[email]))
        self.imported += len(self.pending) - len(suppressed)
        self.pending.clear()
        self.lines.clear()

    def row(self, row: list[str], line: int, last_line: int, shown: str) -> None:
        if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
            return
        if any("\n" in c or "\r" in c for c in row):
            self._error(line, f"a quote opened on this line is not closed before line {last_line}: "
                        "those lines were read as one cell; close the quote (a quote inside a quoted cell "
                        "is written twice: \"\") or remove it; row skipped")
            return
        cells = [unescape_cell(c.strip()) for c in row]
        if (not self.seen_header and self.imported == 0 and not self.pending
                and cells[0].lower() in ("email", "e-mail")):
            self.seen_header = True
            return
        if len(cells) > len(CSV_COLUMNS):
            self._error(line, f"{len(cells)} columns separated by {shown}; expected email,name[,tags[,state]] "
                        "(quote a name or tags that contain the separator)")
            return
        email, name, tags, state = (cells + ["", "", "", ""])[:4]
        state = state.lower() or "active"
        if not valid_email(email):
            self._error(line, f"not an email address: {email[:60]!r}; {ROW_HINT}, separated by {shown}; row skipped")
            return
        if state not in STATES:
            self._error(line, f"unknown state {state[:20]!r}: one of {', '.join(STATES)}; row skipped")
            return
        self.pending.append((email, name, tags, state))
        self.lines[email] = line
        if len(self.pending) >= self.batch:
            self.flush()

    def _error(self, line: int, message: str) -> None:
        self.problems.append(Diagnostic("error", message, self.file, line))
