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

import click

from publisher.errors import Diagnostic
from publisher.stores.ledger import Ledger
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
    path = settings.path("email", "subscribers_db")
    if path is None:
        raise SubscriberError(f"[email] subscribers_db is not set: set it in {settings.where()}")
    return SubscriberDB(path)


def open_mail(settings) -> MailStore:
    """The sends and bounce events of the ledger ([paths] ledger)."""
    return MailStore(Ledger(settings.require("paths", "ledger", "the ledger database")))


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


# -- command line ---------------------------------------------------------------------------


@click.group("subscribers")
def subscribers_command() -> None:
    """Manage email subscribers ([email] subscribers_db)."""


def _db(ctx: click.Context) -> SubscriberDB:
    from publisher.cli import get_settings

    return open_db(get_settings(ctx))


@subscribers_command.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def import_cmd(ctx: click.Context, file: Path) -> None:
    """Import FILE.csv (email,name[,tags]); bad rows are reported by line and skipped."""
    from publisher.cli import print_diagnostics

    if not file.is_file():
        raise SubscriberError(f"{file} does not exist")
    db = _db(ctx)
    imported, problems = import_csv(db, file)
    print_diagnostics(problems)
    bad = [d for d in problems if d.level == "error"]
    forgotten = len(problems) - len(bad)
    click.echo(f"imported {imported} row(s), skipped {len(bad)} bad row(s)"
               + (f" and {forgotten} erased address(es)" if forgotten else "")
               + f"; {db.count('active')} active subscriber(s)")
    if bad:
        ctx.exit(1)


@subscribers_command.command("list")
@click.option("--state", type=click.Choice([*STATES, "all"]), default="active", show_default=True)
@click.pass_context
def list_cmd(ctx: click.Context, state: str) -> None:
    """List subscribers (streamed) as CSV: email,name,tags,state."""
    db = _db(ctx)
    out = click.get_text_stream("stdout")
    writer = csv.writer(out, lineterminator="\n")
    for sub in db.iter(None if state == "all" else state):
        writer.writerow([sub.email, sub.name, sub.tags, sub.state])


@subscribers_command.command("count")
@click.pass_context
def count_cmd(ctx: click.Context) -> None:
    """Count subscribers by state."""
    counts = _db(ctx).counts()
    click.echo(" ".join(f"{k}={v}" for k, v in counts.items()) + f" total={sum(counts.values())}")


@subscribers_command.command("remove")
@click.argument("email")
@click.option("--purge", is_flag=True, help="Delete the row instead of marking it unsubscribed "
              "(a later import would then add the address again).")
@click.pass_context
def remove_cmd(ctx: click.Context, email: str, purge: bool) -> None:
    """Unsubscribe EMAIL (it is never mailed again)."""
    db = _db(ctx)
    changed = db.delete(email) if purge else db.set_state(email, "unsubscribed")
    if not changed:
        raise SubscriberError(f"no subscriber {email!r}; see `publisher subscribers list --state all`")
    click.echo(f"{email}: {'deleted' if purge else 'unsubscribed'}")


@subscribers_command.command("sends")
@click.argument("issue")
@click.option("--state", type=click.Choice(["pending", "sending", "sent", "failed", "ambiguous", "all"]),
              default="all", show_default=True)
@click.pass_context
def sends_cmd(ctx: click.Context, issue: str, state: str) -> None:
    """Per-recipient delivery of ISSUE (a date) from the ledger: counts, then failures listed."""
    mail = _mail(ctx)
    counts = mail.counts(issue)
    click.echo(f"{issue}: " + (" ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "nothing sent yet"))
    writer = csv.writer(click.get_text_stream("stdout"), lineterminator="\n")
    for row in mail.listing(issue, None if state == "all" else state):
        writer.writerow([row[0], row[1], row[2] or "", row[3] or ""])


def _mail(ctx: click.Context) -> MailStore:
    from publisher.cli import get_settings

    return open_mail(get_settings(ctx))


@subscribers_command.command("show")
@click.argument("email")
@click.pass_context
def show_cmd(ctx: click.Context, email: str) -> None:
    """Everything kept about EMAIL: state, consent, sends, bounces and complaints."""
    db = _db(ctx)
    sub = db.get(email)
    if sub is None:
        hint = " (erased with `forget`; only its hash is kept)" if db.is_suppressed(email) else ""
        raise SubscriberError(f"no subscriber {email!r}{hint}")
    mail = _mail(ctx)
    click.echo(f"email: {sub.email}\nname: {sub.name}\ntags: {sub.tags}\nstate: {sub.state}")
    added, changed = db.times(sub.id)
    click.echo(f"added: {added}\nchanged: {changed}")
    click.echo("consent:")
    for c in db.consents(sub.email):
        click.echo(f"  {c['requested_at']} source={c['source']} ip={c['ip'] or '-'} "
                   f"confirmed={c['confirmed_at'] or '-'}")
    click.echo("sends:")
    for r in mail.sends_to(sub.email):
        click.echo(f"  {r['issue']} {r['state']} attempts={r['attempts']} code={r['smtp_code'] or '-'} "
                   f"at={r['updated_at']}")
    click.echo("bounces and complaints:")
    for r in mail.events_of(sub.email):
        click.echo(f"  {r['processed_at']} {r['kind']} issue={r['issue'] or '-'} {r['action']}: {r['evidence']}")


@subscribers_command.command("forget")
@click.argument("email")
@click.pass_context
def forget_cmd(ctx: click.Context, email: str) -> None:
    """Erase EMAIL everywhere (subscriber, consent, sends, bounce events); keep only its hash so a
    later import does not add it again."""
    db = _db(ctx)
    n = _mail(ctx).forget(email)
    found = db.forget(email) or n > 0
    click.echo(f"{address_hash(email)[:16]}…: " + ("erased; its hash is kept as a suppression" if found
                                                     else "nothing stored; its hash is kept as a suppression"))


@subscribers_command.command("snippet")
@click.pass_context
def snippet_cmd(ctx: click.Context) -> None:
    """Print the subscribe form as HTML for the archive site (posts to [subscribe] url)."""
    from publisher.cli import get_settings
    from publisher.subscribe import snippet

    click.echo(snippet(get_settings(ctx)), nl=False)
