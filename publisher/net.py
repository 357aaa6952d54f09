"""Outbound HTTP to addresses an issue names (remote images on push, links on `check`): one
address policy and one deadline for both.

The address policy: every address a host name resolves to must be public (globally routable,
not multicast) — loopback, private, link-local, shared, reserved and documentation ranges are
refused before any connection, unless `[network] allow_private` is set (an intranet; the tests'
local servers). The connection goes to the address that was checked, never to a second DNS
answer (DNS rebinding), and every redirect hop is resolved and checked the same way.

The deadline: one budget for the whole exchange — name resolution, connect, TLS, request, status
line, headers and body, across redirects. A watchdog shuts the socket down when the budget is
spent, so a server that drips its headers or its body one byte at a time cannot hold a push or
a check longer than the budget (a per-read timeout never fires on a steady drip).

Errors are `NetError` with a `kind` ("refused", "dns", "timeout", "connect", "redirects",
"scheme", "protocol", "too-large") and a message a person can act on.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from email.message import Message
from urllib.parse import quote, urljoin, urlsplit

REDIRECTS = (301, 302, 303, 307, 308)
ALLOW_KEY = "[network] allow_private"
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"


class NetError(Exception):
    """An address or an exchange refused or failed; `kind` says which (see the module)."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.message = message
        self.kind = kind


def public(address: str) -> bool:
    """Whether an IP address is one the policy lets us connect to without the opt-in."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve(host: str, port: int, *, allow_private: bool, timeout: float) -> str:
    """The address to connect to for `host`, once every address it resolves to is allowed.

    Name resolution is bounded by `timeout` too (it runs in a helper thread the caller does not
    wait for past the budget)."""
    result: dict = {}

    def lookup() -> None:
        try:
            result["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            result["error"] = exc

    worker = threading.Thread(target=lookup, daemon=True, name="net-resolve")
    worker.start()
    worker.join(max(0.0, timeout))
    if worker.is_alive():
        raise NetError(f"host {host}: name resolution timed out", "timeout")
    if "error" in result:
        raise NetError(f"host {host} cannot be resolved ({result['error']})", "dns")
    addresses = list(dict.fromkeys(info[4][0] for info in result["infos"]))
    if not addresses:
        raise NetError(f"host {host} cannot be resolved (no address)", "dns")
    if not allow_private:
        for addr in addresses:
            if not public(addr):
                raise NetError(
                    f"host {host} is a private, loopback, link-local or reserved address ({addr}); only "
                    f"public addresses are contacted ({ALLOW_KEY} = true allows others, e.g. an intranet)",
                    "refused")
    return addresses[0]


@dataclass
class Response:
    """An answer whose headers have arrived; the body is read with `read` under the same deadline."""

    url: str
    status: int
    headers: Message
    method: str
    _conn: http.client.HTTPConnection = field(repr=False)
    _resp: http.client.HTTPResponse = field(repr=False)
    _watch: _Watchdog = field(repr=False)

    def read(self, max_bytes: int, chunk: int = 64 * 1024) -> bytes:
        """The whole body; NetError "too-large" past `max_bytes`, "timeout" past the deadline."""
        parts, total = [], 0
        try:
            while True:
                block = self._resp.read(chunk)
                if not block:
                    break
                total += len(block)
                if total > max_bytes:
                    raise NetError(f"is over the {max_bytes:,}-byte cap", "too-large")
                parts.append(block)
        except (OSError, http.client.HTTPException) as exc:
            raise self._watch.error(exc, "the download broke off") from None
        if self._watch.expired:  # the watchdog cut it short: what came is not the whole body
            raise self._watch.error(None, "")
        return b"".join(parts)

    def close(self) -> None:
        self._watch.cancel()
        self._conn.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Watchdog:
    """Shuts a socket down at the deadline, so no read can outlive the budget."""

    def __init__(self, timeout: float, deadline: float, what: str):
        self.timeout = timeout
        self.deadline = deadline
        self.what = what
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            if self._timer is None:
                self._timer = threading.Timer(max(0.0, self.deadline - time.monotonic()), self._fire)
                self._timer.daemon = True
                self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()

    def timed_out(self) -> NetError:
        return NetError(f"timed out after {self.timeout:g} s ({self.what})", "timeout")

    def error(self, exc: BaseException | None, what: str) -> NetError:
        if self.expired or time.monotonic() >= self.deadline or isinstance(exc, TimeoutError):
            return self.timed_out()
        return NetError(f"{what}: {type(exc).__name__}: {exc}", "protocol")


def _target(url: str) -> tuple[str, str, int, str, str]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise NetError(f"{url}: only http:// and https:// URLs are fetched", "scheme")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise NetError(f"{url}: invalid port", "scheme") from None
    host = parts.hostname
    try:
        ascii_host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise NetError(f"{url}: invalid host name", "scheme") from None
    netloc = f"[{ascii_host}]" if ":" in ascii_host else ascii_host
    host_header = netloc if parts.port is None else f"{netloc}:{parts.port}"
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        path += "?" + quote(parts.query, safe=_QUERY_SAFE)
    return scheme, ascii_host, port, host_header, path


def open_url(url: str, *, timeout: float, allow_private: bool, method: str = "GET",
             headers: dict[str, str] | None = None, max_redirects: int = 3,
             what: str = "the time limit") -> Response:
    """GET or HEAD `url` under the address policy, following at most `max_redirects` redirects
    (each hop checked), all within `timeout` seconds from now. The caller closes the Response."""
    deadline = time.monotonic() + timeout
    watch = _Watchdog(timeout, deadline, what)
    try:
        return _follow(url, watch, deadline, allow_private, method, headers or {}, max_redirects)
    except BaseException:
        watch.cancel()
        raise


def _follow(url: str, watch: _Watchdog, deadline: float, allow_private: bool, method: str,
            headers: dict[str, str], max_redirects: int) -> Response:
    for _ in range(max_redirects + 1):
        scheme, host, port, host_header, path = _target(url)
        left = deadline - time.monotonic()
        if left <= 0:
            raise watch.timed_out()
        address = resolve(host, port, allow_private=allow_private, timeout=left)
        conn, resp = _exchange(watch, scheme, host, address, port, method, path,
                               {"Host": host_header, **headers}, deadline)
        if resp.status in REDIRECTS and resp.getheader("Location"):
            location = resp.getheader("Location")
            conn.close()
            url = urljoin(url, location)
            continue
        return Response(url, resp.status, resp.msg, method, conn, resp, watch)
    raise NetError(f"more than {max_redirects} redirects", "redirects")


def _exchange(watch: _Watchdog, scheme: str, host: str, address: str, port: int, method: str, path: str,
              headers: dict[str, str], deadline: float):
    left = deadline - time.monotonic()
    if left <= 0:
        raise watch.timed_out()
    try:
        sock = socket.create_connection((address, port), timeout=left)
    except TimeoutError:
        raise watch.timed_out() from None
    except OSError as exc:
        reason = "connection refused" if isinstance(exc, ConnectionRefusedError) else (exc.strerror or str(exc))
        raise NetError(f"cannot connect to {host} ({address}): {reason}", "connect") from None
    watch.watch(sock)
    conn = http.client.HTTPConnection(host, port, timeout=left)
    try:
        if scheme == "https":
            import certifi

            context = ssl.create_default_context(cafile=certifi.where())
            sock = context.wrap_socket(sock, server_hostname=host)
            watch.watch(sock)
        conn.sock = sock  # connected to the checked address: http.client never resolves again
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for key, value in headers.items():
            conn.putheader(key, value)
        conn.endheaders()
        resp = conn.getresponse()
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        err = watch.error(exc, f"no valid answer from {host}")
        if err.kind != "timeout" and isinstance(exc, ssl.SSLError):
            err = NetError(f"TLS with {host} failed: {exc.reason or exc}", "connect")
        raise err from None
    return conn, resp
