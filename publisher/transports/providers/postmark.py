"""Postmark: `POST /email/batch` (≤ 500 messages a call, each its own JSON object: the reader's
own unsubscribe link in both bodies and its List-Unsubscribe headers), message stream
[postmark] message_stream (`broadcast`), token in X-Postmark-Server-Token.

The answer is per message, in order (HTTP 200 even when some fail): ErrorCode 0 is accepted;
406 (inactive recipient: Postmark suppressed the address after a bounce, complaint or
unsubscribe) and 300 (invalid request, e.g. a malformed address) fail that reader; any other
code is not the reader's fault and leaves the reader pending. A whole-call 401 / ErrorCode 10
(bad token) stops the run; 422 for the whole call is a campaign fault; 429 and 5xx are retried.

Reconciliation after a lost reply: `GET /messages/outbound?recipient=…&tag=publisher-ISSUE`
(Postmark's outbound message search) for each reader of the call; a message found means the
reader has it. The search lags behind sending by seconds: [postmark] reconcile_delay.
"""

from __future__ import annotations

import json
import re
import uuid

import requests

from publisher.errors import TransportError
from publisher.transports.providers.base import (
    SENT,
    Fault,
    Outcome,
    Provider,
    Reader,
    http,
    tag_of,
)

FAILS_READER = {406, 300}  # inactive recipient; invalid email request
_TOKENS = {"to": "@@PUB_TO@@", "html": "@@PUB_UNSUB_HTML@@",
           "text": "@@PUB_UNSUB_TEXT@@", "hdr": "@@PUB_UNSUB_HDR@@", "batch": "@@PUB_BATCH@@"}


_PLAIN = re.compile(r'[ !#-\[\]-~]*')  # printable ASCII but " and \ : the same inside a JSON string


def _j(value: str) -> bytes:
    """A string as the inside of a JSON string literal (UTF-8)."""
    if _PLAIN.fullmatch(value):
        return value.encode("ascii")
    return json.dumps(value, ensure_ascii=False)[1:-1].encode("utf-8")


class Postmark(Provider):
    name = "postmark"
    table = "postmark"
    batch_limit = 500
    max_message_bytes = 10 * 1024 * 1024  # Postmark: 10 MB a message, attachments included
    reconciles = True

    def __init__(self, settings, content, template):
        super().__init__(settings, content, template)
        cfg = settings["postmark"]
        self.api = cfg["api_base"].rstrip("/")
        self.token = settings.secret("postmark", "server_token_env")
        self.stream = settings.require("postmark", "message_stream", "the message stream, e.g. broadcast")
        self.session_headers = {"Accept": "application/json", "Content-Type": "application/json",
                                "X-Postmark-Server-Token": self.token}
        self._chunks, self._slots = self._template()

    def describe(self) -> str:
        return f"postmark (stream {self.stream})"

    def _template(self) -> tuple[list[bytes], list[str]]:
        """One message as JSON bytes around per-reader slots (built once, filled by joining)."""
        from publisher.mailmsg import PLACEHOLDER

        c = self.content
        nonce = uuid.uuid4().hex  # slots no issue text can contain (or forge)
        t = {k: v.replace("@@PUB_", f"@@PUB{nonce}_") for k, v in _TOKENS.items()}
        # no Message-ID of ours: Postmark gives each message its own (MessageID in the answer);
        # the call is identified by its key in Metadata and reconciled by tag and recipient
        headers = [{"Name": "List-Id", "Value": c.list_id_header},
                   {"Name": "List-Unsubscribe", "Value": t["hdr"]},
                   {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"}]
        msg = {"From": c.from_header, "To": t["to"], "Subject": c.subject,
               "HtmlBody": c.html.replace(PLACEHOLDER, t["html"]),
               "TextBody": c.text.replace(PLACEHOLDER, t["text"]),
               "Headers": headers, "Tag": tag_of(c.issue), "TrackOpens": False, "TrackLinks": "None",
               "Metadata": {"publisher_issue": c.issue, "publisher_batch": t["batch"]},
               "MessageStream": self.stream}
        if c.reply_to:
            msg["ReplyTo"] = c.reply_to
        text = json.dumps(msg, ensure_ascii=False)
        chunks, slots = [], []
        pattern = re.compile("|".join(re.escape(v) for v in t.values()))
        names = {v: k for k, v in t.items()}
        pos = 0
        for m in pattern.finditer(text):
            chunks.append(text[pos:m.start()].encode("utf-8"))
            slots.append(names[m.group(0)])
            pos = m.end()
        chunks.append(text[pos:].encode("utf-8"))
        return chunks, slots

    def values(self, batch_key: str, r: Reader) -> dict[str, bytes]:
        import html

        return {"to": _j(r.email), "html": _j(html.escape(r.unsubscribe_url, quote=True)),
                "text": _j(r.unsubscribe_url), "hdr": _j(self.content.list_unsubscribe(r.unsubscribe_url)),
                "batch": _j(batch_key)}

    def message(self, values: dict[str, bytes]) -> bytes:
        out = [self._chunks[0]]
        for name, chunk in zip(self._slots, self._chunks[1:], strict=True):
            out.append(values[name])
            out.append(chunk)
        return b"".join(out)

    def prepare(self, batch_key: str, readers: list[Reader]) -> Batch:
        return Batch(self, [self.values(batch_key, r) for r in readers])

    def send(self, session: requests.Session, payload: Batch, readers: list[Reader]) -> dict[str, Outcome]:
        resp = http(session, "POST", f"{self.api}/email/batch", timeout=self.timeout, what="Postmark /email/batch",
                    data=payload, headers=self.session_headers)
        body = _json(resp)
        if resp.status_code in (401, 403) or (isinstance(body, dict) and body.get("ErrorCode") == 10):
            raise self.fatal("Postmark refused the server token", resp,
                             "check the token in the variable [postmark] server_token_env names")
        if resp.status_code != 200:
            code = body.get("ErrorCode") if isinstance(body, dict) else None
            msg = body.get("Message") if isinstance(body, dict) else resp.text[:300]
            raise Fault(f"Postmark refused the batch: {resp.status_code} ErrorCode {code}: {msg}", code)
        if not isinstance(body, list) or len(body) != len(readers):
            raise TransportError(f"Postmark answered the batch of {len(readers)} with "
                                 f"{len(body) if isinstance(body, list) else 'no'} results; nothing recorded as "
                                 "sent — the batch is reconciled on the next run")
        out: dict[str, Outcome] = {}
        for r, res in zip(readers, body, strict=True):
            code = res.get("ErrorCode") if isinstance(res, dict) else None
            msg = str(res.get("Message", ""))[:400] if isinstance(res, dict) else ""
            if code == 0:
                out[r.email] = SENT
            elif code in FAILS_READER:
                out[r.email] = Outcome("failed", code, f"Postmark ErrorCode {code}: {msg}")
            else:
                out[r.email] = Outcome("pending", code, f"Postmark ErrorCode {code}: {msg}")
        return out

    def reconcile(self, session: requests.Session, batch_key: str, started: float, emails: list[str]) -> set[str]:
        found = set()
        for e in emails:
            resp = http(session, "GET", f"{self.api}/messages/outbound", timeout=self.timeout,
                        what="Postmark message search", headers=self.session_headers,
                        params={"recipient": e, "tag": tag_of(self.content.issue), "messagestream": self.stream,
                                "count": 1, "offset": 0})
            body = _json(resp)
            if resp.status_code != 200 or not isinstance(body, dict):
                raise TransportError(f"Postmark message search answered {resp.status_code} "
                                     f"{resp.text[:200]!r}: cannot reconcile a lost reply; run again later")
            if int(body.get("TotalCount") or 0) > 0:
                found.add(e)
        return found


class Batch:
    """The call's JSON array as a file the HTTP client reads: each reader's message is written
    when the socket wants it, so a 500-message call (≈ 500 × the message size) never sits in
    memory whole; its length is known up front (Content-Length, no chunked encoding)."""

    def __init__(self, provider: Postmark, values: list[dict[str, bytes]]):
        self.p = provider
        self.values = values
        fixed = sum(len(c) for c in provider._chunks)
        self.length = 2 + max(0, len(values) - 1) + sum(
            fixed + sum(len(v[name]) for name in provider._slots) for v in values)
        self.i = 0
        self.buf = bytearray(b"[")

    def __len__(self) -> int:
        return self.length

    def read(self, n: int = -1) -> bytes:
        while (n < 0 or len(self.buf) < n) and self.i <= len(self.values):
            if self.i == len(self.values):
                self.buf += b"]"
            else:
                if self.i:
                    self.buf += b","
                self.buf += self.p.message(self.values[self.i])
            self.i += 1
        n = len(self.buf) if n < 0 else min(n, len(self.buf))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


def _json(resp: requests.Response):
    try:
        return resp.json()
    except ValueError:
        return None
