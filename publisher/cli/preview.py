"""`publisher preview`: the preview page of publisher/preview.py, written to a file or served live."""

from __future__ import annotations

import webbrowser
from pathlib import Path

import click

from publisher import pipeline
from publisher.cli import get_settings, print_diagnostics
from publisher.errors import SourceError
from publisher.preview import LivePreview, PreviewError, resolve_channels, serve, write_preview


@click.command("preview")
@click.argument("issue", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--channel", "-c", default=None, help="Preview one channel only (default: every enabled channel).")
@click.option("--no-open", is_flag=True, help="Do not open a browser; only print the path or URL.")
@click.option("--serve", "serve_mode", is_flag=True,
              help="Serve the preview locally and reload it whenever the issue, config or templates change.")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Port for --serve (default: [preview] port; 0 picks a free one).")
@click.pass_context
def preview_command(
    ctx: click.Context, issue: Path | None, channel: str | None, no_open: bool, serve_mode: bool, port: int | None
) -> None:
    """Preview ISSUE (default: the newest issue) as every channel's readers will see it."""
    from publisher.settings import load_settings

    settings = get_settings(ctx)
    issue_path = (issue or pipeline.newest_issue(settings)).resolve()
    if not issue_path.is_file():
        raise SourceError("no such issue file", file=str(issue_path))
    channels = resolve_channels(settings, channel)
    if port is not None and not serve_mode:
        raise PreviewError("--port only applies with --serve")

    if serve_mode:
        config_path = ctx.find_root().obj.get("config_path")
        live = LivePreview(lambda: load_settings(config_path), issue_path, channels, follow_newest=issue is None)
        serve(live, settings["preview"]["port"] if port is None else port, open_browser=not no_open,
              say=click.echo)
        return

    _, warnings = pipeline.load(issue_path)
    print_diagnostics(warnings)
    target = write_preview(settings, issue_path, channels or settings.enabled_channels)
    click.echo(str(target))
    if not no_open:
        webbrowser.open(target.as_uri())
