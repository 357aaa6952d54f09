"""Unsubscribe links and `publisher serve`: the one-click unsubscribe endpoint (RFC 8058).

Tokens are signed and verified by publisher/tokens.py (`base64url(email) "." HMAC-SHA256`): the
server needs no token table; it verifies the signature and unsubscribes the address it names.

    GET  /unsubscribe?token=…   a confirmation page with a button (changes nothing: link
                                scanners and prefetchers follow GET links)
    POST /unsubscribe?token=…   with `List-Unsubscribe=One-Click` (the mail client's one-click
                                request) or the page's form: unsubscribes at once
    GET  /healthz               "ok"
    /subscribe, /confirm        the subscribe form and double opt-in (publisher/subscribe.py)

A bad or forged token gets 400 and changes nothing.
"""

from __future__ import annotations

import errno
import logging
import threading
from urllib.parse import parse_qs

from publisher.tokens import make_token, unsubscribe_url, verify_token  # noqa: F401 (the endpoint's API)

log = logging.getLogger("publisher.unsubscribe")

MAX_BODY = 4096
MAX_FIELDS = 10


def read_form(environ, *, max_body: int = MAX_BODY, max_fields: int = MAX_FIELDS
              ) -> tuple[dict[str, list[str]] | None, str]:
    """The url-encoded body of a POST as fields: (fields, "") — or (None, status) for a body over
    `max_body` bytes ("413 …"), more than `max_fields` fields or not UTF-8 ("400 …"). Never raises
    on what a client sends; a missing Content-Length is an empty body."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None, "400 Bad Request"
    if length > max_body:
        return None, "413 Content Too Large"
    raw = environ["wsgi.input"].read(length) if length > 0 else b""
    if len(raw) > max_body:
        return None, "413 Content Too Large"
    try:
        return parse_qs(raw.decode("utf-8"), max_num_fields=max_fields), ""
    except (ValueError, UnicodeDecodeError):  # too many fields, bad UTF-8 (percent escapes decode leniently)
        return None, "400 Bad Request"


# -- the web app ----------------------------------------------------------------------------

PAGE = "serve/unsubscribe.html"  # every page of the endpoint (templates/serve/)


def _pages(template, name: str):
    """page(start_response, status, which, **values): one of the unsubscribe pages, never cached."""

    def page(start_response, status: str, which: str, **values):
        data = template.render(page=which, name=name, **values).encode("utf-8")
        start_response(status, [("Content-Type", "text/html; charset=utf-8"),
                                ("Content-Length", str(len(data))),
                                ("Cache-Control", "no-store"),
                                ("X-Content-Type-Options", "nosniff"),
                                ("Referrer-Policy", "no-referrer")])
        return [data]

    return page


def _unsubscribe(db, email: str, on_unsubscribe) -> None:
    """Unsubscribe an active address (committed before the page says so); then count it for the
    report — a count that fails loses only the count, never the unsubscribe."""
    changed = db.set_state(email, "unsubscribed", only_from=("active",))
    issue = None
    if changed and on_unsubscribe is not None:
        try:
            issue = on_unsubscribe(email)
        except Exception as exc:  # noqa: BLE001 - the unsubscribe holds; only its count is lost
            log.warning("unsubscribe not counted for the report: %s", type(exc).__name__)
    log.info("unsubscribe %s%s", "done" if changed else "no change",
             f" (issue {issue or '-'})" if issue is not None else "")


def make_app(secret: str, list_id: str, subscribers_db, list_name: str = "", subscribe=None,
             env=None, on_unsubscribe=None):
    """The WSGI application; `subscribers_db` is opened per request thread; `subscribe`, a WSGI
    app, answers /subscribe and /confirm (publisher.subscribe.make_subscribe_app); `env`, the
    template environment of the pages (default: the built-in templates); `on_unsubscribe(email)`
    is called once an address is unsubscribed (publisher.analytics counts it for the report)
    and returns what to log (the issue it is counted for)."""
    from publisher.channels.base import builtin_env
    from publisher.subscribers import SubscriberDB

    db = subscribers_db if isinstance(subscribers_db, SubscriberDB) else SubscriberDB(subscribers_db)
    name = list_name or list_id
    page = _pages((env or builtin_env()).get_template(PAGE), name)

    def app(environ, start_response):
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if subscribe is not None and path.rstrip("/") in ("/subscribe", "/confirm"):
            return subscribe(environ, start_response)
        if path.rstrip("/") != "/unsubscribe":
            return page(start_response, "404 Not Found", "not_found")
        query = parse_qs(environ.get("QUERY_STRING", ""))
        form: dict[str, list[str]] = {}
        if method == "POST":
            got, status = read_form(environ)
            if got is None and status.startswith("413"):
                return page(start_response, status, "too_large")
            form = got or {}  # a malformed body: the token in the query still counts (one-click)
        elif method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, POST"), ("Content-Type", "text/plain")])
            return [b"method not allowed\n"]
        token = (form.get("token") or query.get("token") or [""])[0]
        email = verify_token(secret, list_id, token) if token else None
        if email is None:
            return page(start_response, "400 Bad Request", "invalid")
        if method == "POST":
            _unsubscribe(db, email, on_unsubscribe)
            return page(start_response, "200 OK", "done", email=email)
        return page(start_response, "200 OK", "confirm", email=email, token=token)

    return app


# The production server: waitress (pure Python, no C build, maintained by the Pylons project). One
# asyncore-style thread reads every connection, so idle or slow clients cost a socket, not a
# thread; `threads` workers run the app. Limits answer without a traceback: a request line over
# MAX_URI gets 414, headers over MAX_HEADERS 431, a body over MAX_BODY 413, garbage (TLS bytes) 400.
MAX_URI = 8 * 1024
MAX_HEADERS = 128 * 1024  # read up to this much so an over-long request line is answered 414


def limited(app):
    """The app behind the request-line limit (a plain WSGI callable, as any server runs it)."""

    def guard(environ, start_response):
        uri = environ.get("PATH_INFO", "") + "?" + environ.get("QUERY_STRING", "")
        if len(uri) > MAX_URI:
            start_response("414 URI Too Long", [("Content-Type", "text/plain"), ("Content-Length", "22")])
            return [b"request line too long\n"]
        return app(environ, start_response)

    return guard


class Server:
    """A waitress server on host:port (0 = an ephemeral port); `server_port` is the real one."""

    def __init__(self, app, host: str, port: int, *, threads: int = 8, timeout: int = 30, backlog: int = 1024):
        import waitress

        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        self._server = waitress.create_server(
            limited(app), host=host, port=port, threads=threads, backlog=backlog,
            channel_timeout=timeout, cleanup_interval=max(1, min(30, timeout // 2)),
            connection_limit=max(100, backlog), max_request_header_size=MAX_HEADERS,
            # the provider webhooks (publisher/hooks.py) take bodies up to 512 KB (an SNS message
            # is at most 256 KB); the form endpoints refuse more than MAX_BODY themselves (413)
            max_request_body_size=512 * 1024, expose_tracebacks=False, ident="publisher",
            # X-Forwarded-For reaches the app, which believes it only from [subscribe]
            # trusted_proxies (make_subscribe_app's client_ip): one rule, in one place
            clear_untrusted_proxy_headers=False)
        self.server_port = self._server.effective_port
        self._closing = False

    def serve_forever(self) -> None:
        try:
            self._server.run()
        except OSError as exc:  # shutdown() closed the sockets under the loop's select()
            if not self._closing or exc.errno != errno.EBADF:
                raise

    def shutdown(self) -> None:
        self._closing = True
        self._server.close()
        self._server.task_dispatcher.shutdown()

    server_close = shutdown


def make_wsgi_server(app, host: str, port: int, *, threads: int = 8, timeout: int = 30) -> Server:
    return Server(app, host, port, threads=threads, timeout=timeout)


def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0, **kw) -> Server:
    """Start the app on a real port in a daemon thread; returns the server (server.server_port)."""
    server = make_wsgi_server(app, host, port, **kw)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
