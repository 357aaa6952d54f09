"""`publisher init [DIR]`: start a newsletter of your own (publisher/scaffold.py writes the files)."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from publisher.scaffold import DEFAULT_CHANNELS, LICENSES, Answers, make_project


def _ask(value, prompt: str, default, yes: bool):
    if value is not None:
        return value
    if yes:
        if default is None:
            raise click.UsageError(f"--yes takes the defaults, but {prompt.lower()} has none: give it as an option")
        return default
    return click.prompt(prompt, default=default, show_default=default not in (None, ""))


@click.command("init")
@click.argument("folder", required=False, default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", default=None, help="The newsletter's name.")
@click.option("--tagline", default=None, help="One line under the name (default: none).")
@click.option("--sender", "sender", metavar="ADDRESS", default=None, help="The From: address of the emails.")
@click.option("--site", metavar="URL", default=None,
              help="The newsletter's web address (issue pages, unsubscribe and subscribe links).")
@click.option("--license", "license_id", metavar="ID", default=None,
              help=f"The issues' license (default: none): {', '.join(LICENSES)}.")
@click.option("--channels", default=None, metavar="A,B,…",
              help=f"Channels to publish to (default: {','.join(DEFAULT_CHANNELS)}).")
@click.option("--account", default=None, help="WeChat account name (asked when wechat is among the channels).")
@click.option("--yes", "-y", is_flag=True, help="Take the defaults for everything not given as an option.")
def init_command(folder: Path, name, tagline, sender, site, license_id, channels, account, yes: bool) -> None:
    """Start a newsletter of your own in FOLDER (default: here).

    Writes publisher.toml with every identity key (name, sender, site, license, channels), a
    sample issue with an image, and a .gitignore for databases and build output. Asks for what
    is not given as an option (--yes: takes the defaults; --name, --sender and --site have none).
    Never overwrites: refuses a folder that already has a publisher.toml.
    """
    name = _ask(name, "Newsletter name", None, yes)
    tagline = _ask(tagline, "Tagline (one line, may be empty)", "", yes)
    sender = _ask(sender, "Sender address (From:)", None, yes)
    site = _ask(site, "Web site URL (https://…)", None, yes)
    license_id = _ask(license_id, f"License ({', '.join(LICENSES)})", "none", yes)
    channels = _ask(channels, "Channels", ",".join(DEFAULT_CHANNELS), yes)
    chosen = [c.strip() for c in channels.split(",") if c.strip()]
    if account is None:
        account = _ask(None, "Account name for follow lines (e.g. a WeChat official account; empty = none)", "", yes)
    written = make_project(folder, Answers(name=name, tagline=tagline, sender=sender, site=site,
                                           license=license_id, channels=chosen, account=account))
    for path in written:
        click.echo(f"wrote {path}")
    click.echo("next:")
    if folder.resolve() != Path.cwd().resolve():
        click.echo(f"  cd {shlex.quote(str(folder))}")
    click.echo("  publisher check --offline     # the sample issue (without --offline: its links too)")
    click.echo("  publisher preview             # see it as readers will")
    click.echo("  publisher build               # every issue to every enabled channel, into build/")
