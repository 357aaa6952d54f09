"""The `publisher` command line: the thin top layer, and the only package that imports click or rich.

One module per command (publisher/cli/<command>.py), imported only when used (LAZY_COMMANDS),
which keeps start-up fast. A command parses its options, calls the plain functions of the domain
modules (`build()`, `push_issue()`, `run_tick()`, `run_check()`, …) and prints what they return;
progress comes back through a callback that `publisher.cli.progress` turns into a rich bar on a
terminal or plain lines otherwise. Every error a user can cause is a PublisherError, printed as
`file:line: error: …` with exit status 1 — never a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from pathlib import Path

import click

from publisher.errors import Diagnostic, PublisherError

# name -> "module:attribute" of a click command
LAZY_COMMANDS = {
    "init": "publisher.cli.init:init_command",
    "import": "publisher.cli.importer:import_command",
    "check": "publisher.cli.check:check_command",
    "render": "publisher.cli.render:render_command",
    "build": "publisher.cli.build:build_command",
    "preview": "publisher.cli.preview:preview_command",
    "push": "publisher.cli.push:push_command",
    "status": "publisher.cli.status:status_command",
    "schedule": "publisher.cli.schedule:schedule_command",
    "subscribers": "publisher.cli.subscribers:subscribers_command",
    "serve": "publisher.cli.serve:serve_command",
    "bounces": "publisher.cli.bounces:bounces_command",
    "db": "publisher.cli.db:db_command",
    "worker": "publisher.cli.worker:worker_command",
    "report": "publisher.cli.report:report_command",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._available()))

    def _available(self) -> list[str]:
        names = []
        for name, target in LAZY_COMMANDS.items():
            module = target.split(":")[0]
            if importlib.util.find_spec(module) is not None:
                names.append(name)
        return names

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS:
            module, attr = LAZY_COMMANDS[name].split(":")
            if importlib.util.find_spec(module) is None:
                return None
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Config file (default: $PUBLISHER_CONFIG, else publisher.toml here or in the nearest folder "
         "above, else built-in defaults).",
)
@click.option("-v", "--verbose", count=True, help="Log what happens to stderr (-v: steps, -vv: debug).")
@click.version_option(package_name="publisher")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, verbose: int) -> None:
    """Publish one canonical newsletter issue to every channel.

    Shell completion (click's): eval "$(_PUBLISHER_COMPLETE=bash_source publisher)" in ~/.bashrc
    (zsh: zsh_source, fish: fish_source).
    """
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path
    if verbose:
        _log_to_stderr(logging.DEBUG if verbose > 1 else logging.INFO)


def _log_to_stderr(level: int) -> None:
    """-v: the program's logs on stderr, secrets masked (publisher.redact)."""
    from publisher.redact import RedactFilter

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    if level > logging.DEBUG:  # -v: our steps, not every library's chatter
        for name in ("urllib3", "requests", "PIL", "apscheduler", "waitress", "mail.log", "asyncio"):
            logging.getLogger(name).setLevel(logging.WARNING)


def get_settings(ctx: click.Context):
    """The validated settings for this invocation (loaded once)."""
    from publisher.settings import load_settings

    root = ctx.find_root()
    root.ensure_object(dict)
    if "settings" not in root.obj:
        settings = load_settings(root.obj.get("config_path"))
        logging.getLogger("publisher.config").info("config: %s", settings.where())
        root.obj["settings"] = settings
    return root.obj["settings"]


def format_option(*choices: str, default: str = "text"):
    """--format: text for people, json for tools (numbers as numbers)."""
    return click.option("--format", "fmt", type=click.Choice(choices or ("text", "json")), default=default,
                        show_default=True, help="text for people, json for tools.")


def echo_json(value) -> None:
    import json

    click.echo(json.dumps(value, ensure_ascii=False, indent=1, default=str))


def print_diagnostics(diagnostics: list[Diagnostic]) -> None:
    for d in diagnostics:
        click.secho(str(d), fg="yellow" if d.level == "warning" else "red", err=True)


def main(argv: list[str] | None = None) -> int:
    # NO_COLOR (https://no-color.org): no ANSI colours anywhere, even on a terminal (rich's
    # tables and bars honour it by themselves)
    color = False if os.environ.get("NO_COLOR") else None
    try:
        rv = cli.main(args=argv, prog_name="publisher", standalone_mode=False, color=color)
    except PublisherError as exc:
        click.secho(str(exc) if "error:" in str(exc) else f"error: {exc}", fg="red", err=True, color=color)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except BrokenPipeError:
        return 0
    return rv if isinstance(rv, int) else 0

