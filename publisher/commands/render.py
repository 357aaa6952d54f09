"""`publisher render`: one issue, one channel, to stdout or a folder."""

from __future__ import annotations

from pathlib import Path

import click

from publisher import pipeline
from publisher.atomic import atomic_write
from publisher.channels.base import get_channel
from publisher.cli import get_settings, print_diagnostics


@click.command("render")
@click.argument("issue", type=click.Path(path_type=Path))
@click.option("--channel", "-c", required=True, help="Channel name (see `publisher build --help`; any installed channel).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write all of the channel's files into this folder instead of printing the body.")
@click.pass_context
def render_command(ctx: click.Context, issue: Path, channel: str, out_dir: Path | None) -> None:
    """Render ISSUE for one channel: print its main body, or write every file with --out."""
    settings = get_settings(ctx)
    model, warnings = pipeline.load(issue)
    print_diagnostics(warnings)
    rendition = pipeline.render(model, channel, settings)
    if out_dir is None:
        click.echo(rendition.body, nl=not rendition.body.endswith("\n"))
        return
    for path in pipeline.write_rendition(rendition, out_dir):
        click.echo(str(path))
    channel_cls = get_channel(channel)
    if channel_cls.transport:
        for name, data in channel_cls.transport_class().extra_files(rendition, settings).items():
            path = out_dir / name
            atomic_write(path, data)
            click.echo(str(path))
