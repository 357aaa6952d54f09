"""`publisher subscribers`: manage the email subscribers (publisher/subscribers.py) from the shell."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import click

from publisher.cli import echo_json, get_settings, print_diagnostics
from publisher.subscribers import (
    CSV_COLUMNS,
    STATES,
    SubscriberDB,
    SubscriberError,
    address_hash,
    escape_cell,
    export_rows,
    import_csv,
    open_db,
)


@click.group("subscribers")
def subscribers_command() -> None:
    """Manage email subscribers ([email] subscribers_db)."""


def _db(ctx: click.Context) -> SubscriberDB:
    return open_db(get_settings(ctx))


@subscribers_command.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def import_cmd(ctx: click.Context, file: Path) -> None:
    """Import FILE.csv (email,name[,tags[,state]]): what `subscribers export` writes, or a list
    of your own (`,`, `;` or tab between columns). Bad rows are reported by line and skipped."""
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


def _write_rows(ctx: click.Context, state: str, fmt: str, header: bool) -> None:
    db = _db(ctx)
    out = click.get_text_stream("stdout")
    rows = export_rows(db, None if state == "all" else state)
    if fmt == "json":  # streamed: one subscriber object a line inside one array
        out.write("[")
        for i, row in enumerate(db.iter(None if state == "all" else state)):
            out.write(("," if i else "") + "\n" + json.dumps(dict(zip(CSV_COLUMNS, (
                row.email, row.name, row.tags, row.state), strict=True)), ensure_ascii=False))
        out.write("\n]\n")
        return
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(CSV_COLUMNS)
    writer.writerows(rows)


@subscribers_command.command("list")
@click.option("--state", type=click.Choice([*STATES, "all"]), default="active", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.pass_context
def list_cmd(ctx: click.Context, state: str, fmt: str) -> None:
    """List subscribers (streamed) as CSV (email,name,tags,state; no header) or JSON.

    A cell that starts with =, +, -, @, a tab or CR gets a ' before it, so a spreadsheet shows it
    as text instead of running it as a formula; `subscribers import` takes the ' off again."""
    _write_rows(ctx, state, fmt, header=False)


@subscribers_command.command("export")
@click.option("--state", type=click.Choice([*STATES, "all"]), default="all", show_default=True)
@click.pass_context
def export_cmd(ctx: click.Context, state: str) -> None:
    """Every subscriber as CSV with a header (email,name,tags,state), for a spreadsheet or a
    backup: `subscribers import` takes it back unchanged (states included: an unsubscribed or
    bounced address stays so). Formula-like cells are escaped as in `list`."""
    _write_rows(ctx, state, "csv", header=True)


@subscribers_command.command("count")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
def count_cmd(ctx: click.Context, fmt: str) -> None:
    """Count subscribers by state."""
    counts = _db(ctx).counts()
    if fmt == "json":
        echo_json({**counts, "total": sum(counts.values())})
        return
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
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
def sends_cmd(ctx: click.Context, issue: str, state: str, fmt: str) -> None:
    """Per-recipient delivery of ISSUE (a date) from the ledger: counts, then failures listed."""
    mail = _mail(ctx)
    counts = mail.counts(issue)
    if fmt == "json":
        rows = [{"email": r[0], "state": r[1], "smtp_code": r[2], "error": r[3] or None}
                for r in mail.listing(issue, None if state == "all" else state)]
        echo_json({"issue": issue, "counts": dict(sorted(counts.items())), "recipients": rows})
        return
    click.echo(f"{issue}: " + (" ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "nothing sent yet"))
    writer = csv.writer(click.get_text_stream("stdout"), lineterminator="\n")
    for row in mail.listing(issue, None if state == "all" else state):
        writer.writerow([escape_cell(str(c)) for c in (row[0], row[1], row[2] or "", row[3] or "")])


def _mail(ctx: click.Context):
    from publisher.subscribers import open_mail

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
    from publisher.subscribe import snippet

    click.echo(snippet(get_settings(ctx)), nl=False)
