"""Concurrent link checking with a cache in the ledger database.

Every URL is asked with HEAD (redirects followed), falling back to a GET that is closed after the
headers when the server refuses HEAD (405, 403, 501) or fails on it. Requests go through
publisher/net.py: the address policy of remote images (loopback, private, link-local and reserved
addresses are never probed unless `[network] allow_private`; every resolved address and every
redirect hop checked; the connection to the checked address) and one deadline per request,
`[check] timeout`, for connect, headers and redirects together. A thread pool
bounds the global concurrency and a semaphore per host keeps any one site from being hammered;
the URLs are interleaved by host so that workers do not queue up behind one busy host.

Results that will not change in a day (2xx/3xx answers, and 4xx answers other than 408/429) are
cached in the ledger's `link_cache` table for `[check] cache_hours`; transient failures (5xx,
timeouts, connection errors, 408, 429) are checked again on the next run.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from publisher import net
from publisher.stores.ledger import Ledger
from publisher.stores.linkcache import LinkCache

HEAD_REFUSED = {403, 405, 501}
MAX_REDIRECTS = 10
REFUSED = "not probed"
TRANSIENT_STATUS = {408, 429}


@dataclass(frozen=True)
class LinkResult:
    url: str
    ok: bool
    status: int | None = None  # the final HTTP status, None when no answer came
    error: str | None = None  # "timeout", "DNS failure", "connection error: …", "HTTP 404", "not probed: …"
    final_url: str | None = None  # where redirects led
    method: str = "HEAD"
    cached: bool = False
    elapsed: float = 0.0

    @property
    def transient(self) -> bool:
        return (self.status is None and not self.ok) or (self.status or 0) >= 500 or self.status in TRANSIENT_STATUS

    @property
    def refused(self) -> bool:
        """Not probed: the address policy refused the host (see publisher/net.py)."""
        return (self.error or "").startswith(REFUSED)

    def describe(self) -> str:
        if self.ok:
            where = f" → {self.final_url}" if self.final_url and self.final_url != self.url else ""
            return f"HTTP {self.status}{where}"
        return self.error or f"HTTP {self.status}"


def checkable(url: str) -> bool:
    """Only absolute http(s) URLs are checked (mailto:, relative paths and anchors are not)."""
    return urlsplit(url.strip()).scheme.lower() in ("http", "https")


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def _classify(exc: net.NetError) -> str:
    if exc.kind == "timeout":
        return "timeout"
    if exc.kind == "dns":
        return "DNS failure"
    if exc.kind == "refused":
        return f"{REFUSED}: {exc.message}"
    if exc.kind == "redirects":
        return "too many redirects"
    if exc.kind == "connect" and "connection refused" in exc.message:
        return "connection error: connection refused"
    if exc.kind == "connect":
        return "connection error"
    return f"request failed: {exc.message}"


def _no_fallback(error: str) -> bool:
    """Failures a GET would only repeat (and, for timeouts, double the wait)."""
    return error in ("timeout", "DNS failure", "too many redirects") \
        or error.startswith(("connection error: connection refused", REFUSED))


class LinkChecker:
    def __init__(
        self,
        *,
        timeout: float = 10,
        concurrency: int = 20,
        per_host: int = 4,
        cache_hours: float = 24,
        user_agent: str = "publisher-linkcheck/0.1",
        ledger: Ledger | None = None,
        allow_private: bool = False,
    ):
        self.timeout = timeout
        self.concurrency = max(1, concurrency)
        self.per_host = max(1, per_host)
        self.cache_seconds = cache_hours * 3600
        self.user_agent = user_agent
        self.allow_private = allow_private
        self.ledger = ledger
        self.cache = LinkCache(ledger) if ledger is not None else None
        self._host_locks: dict[str, threading.Semaphore] = defaultdict(lambda: threading.Semaphore(self.per_host))
        self._guard = threading.Lock()

    @classmethod
    def from_settings(cls, settings, ledger: Ledger | None = None) -> LinkChecker:
        c = settings["check"]
        return cls(timeout=c["timeout"], concurrency=c["concurrency"], per_host=c["per_host"],
                   cache_hours=c["cache_hours"], user_agent=c["user_agent"], ledger=ledger,
                   allow_private=bool(settings["network"]["allow_private"]))

    # -- one URL -----------------------------------------------------------------------------

    def _semaphore(self, host: str) -> threading.Semaphore:
        with self._guard:
            return self._host_locks[host]

    def check_one(self, url: str) -> LinkResult:
        start = time.monotonic()
        with self._semaphore(host_of(url)):
            result = self._fetch(url)
        return replace(result, elapsed=time.monotonic() - start)

    def _fetch(self, url: str) -> LinkResult:
        try:
            result = self._ask(url, "HEAD")
            if result.status not in HEAD_REFUSED:
                return result
        except net.NetError as exc:
            head_error = _classify(exc)
            if _no_fallback(head_error):
                return LinkResult(url, False, None, head_error, method="HEAD")
        try:
            return self._ask(url, "GET")
        except net.NetError as exc:
            return LinkResult(url, False, None, _classify(exc), method="GET")

    def _ask(self, url: str, method: str) -> LinkResult:
        """One request (redirects followed), closed once the headers are in."""
        with net.open_url(url, method=method, timeout=self.timeout, allow_private=self.allow_private,
                          max_redirects=MAX_REDIRECTS, what="[check] timeout",
                          headers={"User-Agent": self.user_agent, "Accept": "*/*"}) as resp:
            code = resp.status
            ok = code < 400
            return LinkResult(url, ok, code, None if ok else f"HTTP {code}", final_url=resp.url, method=method)

    # -- cache ---------------------------------------------------------------------------------

    def _cached(self, urls: list[str]) -> dict[str, LinkResult]:
        if self.cache is None or self.cache_seconds <= 0 or not urls:
            return {}
        out: dict[str, LinkResult] = {}
        allowed: dict[str, bool] = {}  # host -> may be contacted now (answers cached under the opt-in)
        for row in self.cache.fresh(urls, time.time() - self.cache_seconds):
            if not self.allow_private and not self._public_host(row["url"], allowed):
                continue  # checked again, i.e. refused by the address policy

            out[row["url"]] = LinkResult(row["url"], bool(row["ok"]), row["status"], row["error"],
                                         row["final_url"], method="cache", cached=True)
        return out

    def _public_host(self, url: str, memo: dict[str, bool]) -> bool:
        host = host_of(url)
        if host not in memo:
            try:
                net.resolve(host, 80, allow_private=False, timeout=self.timeout)
                memo[host] = True
            except net.NetError as exc:
                memo[host] = exc.kind != "refused"
        return memo[host]

    def _store(self, results: Iterable[LinkResult]) -> None:
        if self.cache is None:
            return
        rows = [(r.url, r.status, int(r.ok), r.error, r.final_url, time.time())
                for r in results if not r.cached and not r.transient]
        if not rows:
            return
        self.cache.put(rows)

    # -- many URLs -------------------------------------------------------------------------------

    def check(self, urls: Iterable[str], progress: Callable[[int, int], None] | None = None,
              use_cache: bool = True) -> dict[str, LinkResult]:
        """Check every distinct http(s) URL; returns url → LinkResult."""
        unique = list(dict.fromkeys(u.strip() for u in urls if checkable(u)))
        results = self._cached(unique) if use_cache else {}
        todo = [u for u in unique if u not in results]
        done = len(results)
        if progress:
            progress(done, len(unique))
        if todo:
            fresh: list[LinkResult] = []
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(todo)),
                                    thread_name_prefix="linkcheck") as pool:
                futures = [pool.submit(self.check_one, u) for u in _interleave_by_host(todo)]
                for fut in as_completed(futures):
                    r = fut.result()
                    results[r.url] = r
                    fresh.append(r)
                    done += 1
                    if progress:
                        progress(done, len(unique))
            self._store(fresh)
        return results


def _interleave_by_host(urls: list[str]) -> list[str]:
    """Round-robin over hosts, so the first workers do not all wait on one host's semaphore."""
    queues: dict[str, deque[str]] = defaultdict(deque)
    for u in urls:
        queues[host_of(u)].append(u)
    out: list[str] = []
    while queues:
        for host in list(queues):
            out.append(queues[host].popleft())
            if not queues[host]:
                del queues[host]
    return out
