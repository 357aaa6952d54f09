"""`publisher render`: one issue, one channel, to stdout or a folder."""

from __future__ import annotations

from pathlib import Path

import click

from publisher import clipboard, pipeline
from publisher.atomic import atomic_write
from publisher.channels.base import get_channel
from publisher.cli import get_settings, print_diagnostics
from publisher.refs import out_path


@click.command("render")
@click.argument("issue", type=click.Path(path_type=Path))
@click.option("--channel", "-c", required=True, help="Channel name (see `publisher build --help`; any installed channel).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write all of the channel's files into this folder instead of printing the body.")
@click.option("--copy", is_flag=True,
              help="Put the body on the clipboard as the platform's editor takes it (wechat: rich text "
                   "with uploaded image URLs), with wl-copy, xclip, xsel or pbcopy.")
@click.pass_context
def render_command(ctx: click.Context, issue: Path, channel: str, out_dir: Path | None, copy: bool) -> None:
    """Render ISSUE for one channel: print its main body, or write every file with --out."""
    settings = get_settings(ctx)
    model, warnings = pipeline.load(issue)
    print_diagnostics(warnings)
    rendition = pipeline.render(model, channel, settings)
    if copy:
        channel_cls = get_channel(channel)
        body, notes = (channel_cls.transport_class().pasteable(rendition, settings) if channel_cls.transport
                       else (rendition.body, []))
        tool = clipboard.copy(body, rendition.media_type)
        for note in notes:
            click.echo(f"warning: {note}", err=True)
        click.echo(f"copied {len(body):,} characters of {rendition.media_type} to the clipboard ({tool})",
                   err=True)
        return
    if out_dir is None:
        click.echo(rendition.body, nl=not rendition.body.endswith("\n"))
        return
    for path in pipeline.write_rendition(rendition, out_dir):
        click.echo(str(path))
    channel_cls = get_channel(channel)
    if channel_cls.transport:
        for name, data in channel_cls.transport_class().extra_files(rendition, settings).items():
            path = out_path(out_dir, name)
            atomic_write(path, data)
            click.echo(str(path))
