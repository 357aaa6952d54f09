"""`publisher serve`: the unsubscribe endpoint, the subscribe form (publisher/unsubscribe.py) and, when
configured, the click redirect and the report (publisher/analytics.py)."""

from __future__ import annotations

import logging

import click

from publisher.analytics import serve_app
from publisher.cli import get_settings
from publisher.errors import ConfigError
from publisher.unsubscribe import make_wsgi_server


@click.command("serve")
@click.option("--host", default=None, help="Override [serve] host.")
@click.option("--port", type=int, default=None, help="Override [serve] port.")
@click.option("--threads", type=click.IntRange(1, 256), default=None, help="Override [serve] threads (workers).")
@click.pass_context
def serve_command(ctx: click.Context, host: str | None, port: int | None, threads: int | None) -> None:
    """Run the unsubscribe endpoint and the subscribe form (put it behind an HTTPS reverse proxy)."""
    settings = get_settings(ctx)
    app = serve_app(settings)
    host = host or settings["serve"]["host"]
    port = port if port is not None else settings["serve"]["port"]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        server = make_wsgi_server(app, host, port, threads=threads or settings["serve"]["threads"],
                                  timeout=settings["serve"]["timeout"])
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ([serve] host/port): {exc.strerror}") from None
    routes = getattr(app, "routes", {})
    extra = "".join([", click redirects on /r/" if routes.get("redirect") else "",
                     ", the report on /report (password: $" + settings["analytics"]["report_secret_env"] + ")"
                     if routes.get("report") else ""])
    click.echo(f"unsubscribe endpoint on http://{host}:{server.server_port}/unsubscribe, subscribe form on "
               f"/subscribe{extra} (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
