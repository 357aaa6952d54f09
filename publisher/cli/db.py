"""`publisher db`: the database's schema version and moving an install to PostgreSQL."""

from __future__ import annotations

import click

from publisher.cli import get_settings
from publisher.registry import mail_channel


@click.group("db")
def db_command() -> None:
    """The state database: `upgrade` the schema, `copy` SQLite files to PostgreSQL."""


@db_command.command("upgrade")
@click.pass_context
def upgrade_command(ctx: click.Context) -> None:
    """Bring the ledger and subscribers schema to this publisher's version (back up first)."""
    from publisher.stores import location
    from publisher.stores.base import Store
    from publisher.stores.ledger import Ledger
    from publisher.stores.schema import upgrade
    from publisher.stores.subscribers import SubscriberDB

    settings = get_settings(ctx)
    for part, schema_sql in (("ledger", Ledger.schema), ("subscribers", SubscriberDB.schema)):
        where, password = location(settings, part)
        db = Store(where, password=password)
        before, after = upgrade(db, part, schema_sql)
        if before is None:
            click.echo(f"{part}: created at schema version {after} ({db.where})")
        elif before == after:
            click.echo(f"{part}: schema version {after}, up to date ({db.where})")
        else:
            click.echo(f"{part}: schema version {before} → {after} ({db.where})")


@db_command.command("copy")
@click.option("--to", "url", required=True, metavar="URL",
              help="The empty PostgreSQL database, postgresql://user@host:port/dbname (password from "
                   "the variable named by [database] password_env, or PGPASSWORD).")
@click.pass_context
def copy_command(ctx: click.Context, url: str) -> None:
    """Copy this install's SQLite files (ledger, subscribers) into an empty PostgreSQL database:
    every table in one transaction, row counts verified. Then set [database] url to it."""
    from publisher.errors import ConfigError
    from publisher.stores.base import is_url, redact_url
    from publisher.stores.copy import copy_to

    settings = get_settings(ctx)
    if settings["database"]["url"]:
        raise ConfigError(f"[database] url is already set in {settings.where()}: `db copy` moves SQLite files; "
                          "unset it to copy from the files")
    if not is_url(url):
        raise ConfigError(f"--to must be a postgresql://user@host:port/dbname URL, got {url[:40]!r}")
    password = settings.secret("database", "password_env") if settings["database"]["password_env"] else None
    counts = copy_to(settings.require("paths", "ledger", "the ledger database"),
                     settings.require(mail_channel(), "subscribers_db", "the subscribers database"), url, password,
                     progress=lambda table, n: click.echo(f"  {table}: {n} rows"))
    click.echo(f"copied {sum(counts.values())} rows in {len(counts)} tables, counts verified; set "
               f"[database] url = \"{redact_url(url)}\" in {settings.where()} to use it (the password "
               "in the variable named by [database] password_env)")
