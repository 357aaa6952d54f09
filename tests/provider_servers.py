"""Local HTTP servers speaking the email providers' documented contracts, for tests and the
benchmark (127.0.0.1, an ephemeral port). Each records what it accepted, per recipient.

* Postmark (https://postmarkapp.com/developer): POST /email/batch with X-Postmark-Server-Token —
  a JSON array of ≤ 500 messages, answered 200 with one result per message in order (ErrorCode 0
  OK, 406 inactive recipient, 300 invalid request); 401 + ErrorCode 10 for a bad token, 422 +
  ErrorCode for a refused call (410: too many messages), 429 rate limit; GET /messages/outbound
  (recipient, tag, messagestream, count, offset) → {TotalCount, Messages}.
* Mailgun (https://documentation.mailgun.com): POST /v3/<domain>/messages, basic auth api:<key>,
  form fields with ≤ 1,000 `to` and recipient-variables, %recipient.x% substituted in the bodies
  and h: headers → {"id", "message"}; 401 "Forbidden"; 400 {"message"}; GET /v3/<domain>/events
  (event, tags, begin, ascending, limit) → {"items", "paging": {"next"}}.
* SES v2 (https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html): POST
  /v2/email/outbound-emails, JSON with Content.Raw.Data (base64 MIME), AWS SigV4 verified here by
  an independent implementation of the algorithm; errors with x-amzn-ErrorType and {"message"}.

Faults, set on the server object: `script` — a list of actions for the next send calls
("429", "500", "drop" = accept and record, then close the connection without a reply,
"refuse" = a whole-call refusal); `reject` — addresses refused per message; `delay` seconds a call.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import email
import email.policy
import hashlib
import hmac
import json
import re
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

TOKEN = "pm-server-token-for-tests"
MG_KEY = "key-mailgun-for-tests"
MG_DOMAIN = "news.example.org"
AWS_KEY, AWS_SECRET, AWS_REGION = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "eu-west-1"


class Fake(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, handler, *, keep: bool = True):
        super().__init__(("127.0.0.1", 0), handler)
        self.lock = threading.Lock()
        self.accepted: list[dict] = []  # one per recipient accepted
        self.script: list[str] = []
        self.reject: set[str] = set()
        self.delay = 0.0
        self.calls = 0
        self.keep = keep  # keep the accepted messages' bodies (tests) or only the recipients (bench)
        self.events: list[dict] = []  # Mailgun events
        self.search_down = False  # the message search / events API answers 503

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client killed mid-call: expected
            super().handle_error(request, client_address)

    def next_action(self) -> str:
        with self.lock:
            self.calls += 1
            return self.script.pop(0) if self.script else ""

    def recipients(self) -> Counter:
        with self.lock:
            return Counter(a["to"] for a in self.accepted)

    def start(self) -> Fake:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK stall
    server: Fake

    def log_message(self, *args) -> None:  # quiet
        pass

    def body(self) -> bytes:
        self.arrived = time.monotonic()  # when the call reached the provider (rows carry it as "at")
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def reply(self, status: int, payload, headers: dict | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def drop(self) -> None:
        """Close the connection without a reply (the request was accepted)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def fault(self, action: str, shape) -> bool:
        """Answer a scripted fault before accepting; True when answered."""
        if action == "429":
            self.reply(429, shape(429, "Rate limit exceeded"), {"Retry-After": "0"})
            return True
        if action == "500":
            self.reply(500, shape(500, "Internal server error"))
            return True
        return False


# -- Postmark ---------------------------------------------------------------------------------------


class PostmarkHandler(Handler):
    def do_POST(self) -> None:
        raw = self.body()
        if urlsplit(self.path).path != "/email/batch":
            return self.reply(404, {"ErrorCode": 404, "Message": "Not found"})
        if self.headers.get("X-Postmark-Server-Token") != TOKEN:
            return self.reply(401, {"ErrorCode": 10, "Message": "The Server Token you provided in the "
                                                                "X-Postmark-Server-Token request header was invalid."})
        action = self.server.next_action()
        if self.server.delay:
            time.sleep(self.server.delay)
        if self.fault(action, lambda c, m: {"ErrorCode": c, "Message": m}):
            return None
        if action == "refuse":
            return self.reply(422, {"ErrorCode": 400, "Message": "The 'From' address you supplied is not a "
                                                                 "Sender Signature on your account."})
        try:
            messages = json.loads(raw)
        except ValueError:
            return self.reply(422, {"ErrorCode": 402, "Message": "Received invalid JSON input."})
        if not isinstance(messages, list):
            return self.reply(422, {"ErrorCode": 403, "Message": "Incompatible JSON input."})
        if len(messages) > 500:
            return self.reply(422, {"ErrorCode": 410, "Message": "Too many batch messages"})
        results, rows = [], []
        for m in messages:
            to = m.get("To", "")
            if action == "account":  # per message, not the reader's: e.g. a pending account
                results.append({"ErrorCode": 412, "Message": "Your Postmark account is pending approval."})
            elif not m.get("From") or not (m.get("HtmlBody") or m.get("TextBody")) or "@" not in to:
                results.append({"ErrorCode": 300, "Message": "Invalid email request"})
            elif to in self.server.reject:
                # as Postmark words it: the address in the text (each reply differs by it)
                results.append({"ErrorCode": 406, "Message": "You tried to send to recipient(s) that have been "
                                                             f"marked as inactive. Found inactive addresses: {to}. "
                                                             "Inactive recipients are ones that have generated "
                                                             "a hard bounce, a spam complaint, or a manual "
                                                             "suppression."})
            else:
                mid = str(uuid.uuid4())
                rows.append({"to": to, "tag": m.get("Tag"), "stream": m.get("MessageStream"), "id": mid,
                             **({"message": m} if self.server.keep else {})})
                results.append({"ErrorCode": 0, "Message": "OK", "MessageID": mid, "To": to,
                                "SubmittedAt": dt.datetime.now(dt.UTC).isoformat()})
        with self.server.lock:
            self.server.accepted += rows
        if action == "drop":
            return self.drop()
        return self.reply(200, results)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/messages/outbound":
            return self.reply(404, {"ErrorCode": 404, "Message": "Not found"})
        if self.server.search_down:
            return self.reply(503, {"ErrorCode": 100, "Message": "Maintenance"})
        if self.headers.get("X-Postmark-Server-Token") != TOKEN:
            return self.reply(401, {"ErrorCode": 10, "Message": "bad token"})
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if "count" not in q or "offset" not in q:
            return self.reply(422, {"ErrorCode": 1, "Message": "count and offset are required"})
        with self.server.lock:
            found = [a for a in self.server.accepted
                     if (not q.get("recipient") or a["to"].lower() == q["recipient"].lower())
                     and (not q.get("tag") or a["tag"] == q["tag"])
                     and (not q.get("messagestream") or a["stream"] == q["messagestream"])]
        page = found[int(q["offset"]):int(q["offset"]) + int(q["count"])]
        self.reply(200, {"TotalCount": len(found), "Messages": [
            {"MessageID": a["id"], "Tag": a["tag"], "To": [{"Email": a["to"]}], "Recipients": [a["to"]],
             "Status": "Sent", "MessageStream": a["stream"]} for a in page]})


# -- Mailgun ----------------------------------------------------------------------------------------


def multipart_fields(ctype: str, raw: bytes) -> dict[str, list[str]] | None:
    """The fields of a multipart/form-data body (RFC 7578), in order, by name."""
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    if not m:
        return None
    delim = b"--" + m.group(1).encode()
    if not raw.rstrip().endswith(delim + b"--"):
        return None
    form: dict[str, list[str]] = {}
    for chunk in raw.split(delim)[1:-1]:
        head, sep, value = chunk.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head)
        if not sep or not name or not value.endswith(b"\r\n"):
            return None
        form.setdefault(name.group(1).decode(), []).append(value[:-2].decode("utf-8"))
    return form


class MailgunHandler(Handler):
    def authorized(self) -> bool:
        want = "Basic " + base64.b64encode(f"api:{MG_KEY}".encode()).decode()
        return self.headers.get("Authorization") == want

    def do_POST(self) -> None:
        raw = self.body()
        if urlsplit(self.path).path != f"/v3/{MG_DOMAIN}/messages":
            return self.reply(404, {"message": "Domain not found"})
        if not self.authorized():
            return self.reply(401, b"Forbidden")
        action = self.server.next_action()
        if self.server.delay:
            time.sleep(self.server.delay)
        if self.fault(action, lambda c, m: {"message": m}):
            return None
        if action == "refuse":
            return self.reply(400, {"message": "'from' parameter is not a valid address. please check documentation"})
        ctype = self.headers.get("Content-Type", "")
        if ctype.startswith("multipart/form-data"):
            form = multipart_fields(ctype, raw)
            if form is None:
                return self.reply(400, {"message": "malformed multipart/form-data"})
        else:
            form = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
        tos = form.get("to", [])
        if not tos or len(tos) > 1000:
            return self.reply(400, {"message": "Too many recipients" if tos else "'to' parameter is missing"})
        try:
            variables = json.loads(form.get("recipient-variables", ["{}"])[0])
        except ValueError:
            return self.reply(400, {"message": "recipient-variables parameter is not a valid JSON"})
        uv = {k[2:]: v[0] for k, v in form.items() if k.startswith("v:")}
        tags = form.get("o:tag", [])
        now = time.time()
        rows, events = [], []
        for to in tos:
            vals = variables.get(to, {})

            def sub(text: str, vals=vals) -> str:
                return re.sub(r"%recipient\.([A-Za-z0-9_]+)%", lambda m: str(vals.get(m.group(1), "")), text)

            row = {"to": to, "at": self.arrived}
            if self.server.keep:
                row["headers"] = {k[2:]: sub(v[0]) for k, v in form.items() if k.startswith("h:")}
                row["html"] = sub(form.get("html", [""])[0])
                row["text"] = sub(form.get("text", [""])[0])
                row["subject"] = form.get("subject", [""])[0]
            rows.append(row)
            events.append({"event": "accepted", "id": uuid.uuid4().hex[:22], "timestamp": now, "recipient": to,
                           "tags": tags, "user-variables": uv})
        with self.server.lock:
            self.server.accepted += rows
            self.server.events += events
        if action == "drop":
            return self.drop()
        self.reply(200, {"id": f"<{uuid.uuid4().hex}@{MG_DOMAIN}>", "message": "Queued. Thank you."})

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        m = re.fullmatch(rf"/v3/{re.escape(MG_DOMAIN)}/events(?:/(\d+))?", url.path)
        if not m:
            return self.reply(404, {"message": "not found"})
        if not self.authorized():
            return self.reply(401, b"Forbidden")
        if self.server.search_down:
            return self.reply(503, {"message": "Service Unavailable"})
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if m.group(1):  # a paging URL carries its query in the page token
            q = json.loads(base64.urlsafe_b64decode(q["p"]).decode())
        offset = int(q.get("offset", 0))
        limit = min(300, int(q.get("limit", 100)))
        begin = float(q.get("begin", 0))
        with self.server.lock:
            items = [e for e in self.server.events if e["timestamp"] >= begin
                     and (not q.get("event") or e["event"] == q["event"])
                     and (not q.get("tags") or q["tags"] in e["tags"])
                     and (not q.get("recipient") or e["recipient"] == q["recipient"])]
        page = items[offset:offset + limit]
        token = base64.urlsafe_b64encode(json.dumps({**q, "offset": offset + len(page)}).encode()).decode()
        self.reply(200, {"items": page, "paging": {
            "next": f"{self.server.base}/v3/{MG_DOMAIN}/events/1?p={token}",
            "previous": f"{self.server.base}/v3/{MG_DOMAIN}/events/1?p={token}"}})


# -- SES v2 -----------------------------------------------------------------------------------------


def sigv4_ok(method: str, path: str, query: str, headers, body: bytes) -> str | None:
    """None when the Authorization header is a valid SigV4 signature with AWS_SECRET; else why not."""
    auth = headers.get("Authorization", "")
    m = re.fullmatch(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                     r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})", auth)
    if not m:
        return "IncompleteSignature"
    key_id, date, region, service, signed, signature = m.groups()
    if key_id != AWS_KEY:
        return "UnrecognizedClientException"
    amz_date = headers.get("X-Amz-Date", "")
    if not amz_date.startswith(date) or region != AWS_REGION or service != "ses":
        return "IncompleteSignature"
    when = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    if abs((dt.datetime.now(dt.UTC) - when).total_seconds()) > 300:
        return "InvalidSignatureException"
    names = signed.split(";")
    if "host" not in names:
        return "IncompleteSignature"
    canon_headers = "".join(f"{n}:{' '.join(str(headers.get(n, '')).split())}\n" for n in names)
    canon_query = "&".join(sorted(query.split("&"))) if query else ""
    canonical = "\n".join([method, path, canon_query, canon_headers, signed, hashlib.sha256(body).hexdigest()])
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    k = ("AWS4" + AWS_SECRET).encode()
    for part in (date, region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    want = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    return None if hmac.compare_digest(want, signature) else "InvalidSignatureException"


class SesHandler(Handler):
    def error(self, status: int, kind: str, message: str) -> None:
        self.reply(status, {"message": message}, {"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/"})

    def do_POST(self) -> None:
        raw = self.body()
        url = urlsplit(self.path)
        if url.path != "/v2/email/outbound-emails":
            return self.error(404, "NotFoundException", "not found")
        why = sigv4_ok("POST", url.path, url.query, self.headers, raw)
        if why:
            return self.error(403, why, "The request signature we calculated does not match the signature you "
                                        "provided.")
        action = self.server.next_action()
        if self.server.delay:
            time.sleep(self.server.delay)
        if action == "429":
            return self.error(429, "TooManyRequestsException", "Maximum sending rate exceeded.")
        if action == "500":
            return self.error(500, "InternalFailure", "internal failure")
        if action == "refuse":
            return self.error(400, "BadRequestException", "Illegal header: the request was refused")
        if action == "suspended":
            return self.error(400, "AccountSuspendedException", "The account's ability to send email is suspended")
        try:
            req = json.loads(raw)
            to = req["Destination"]["ToAddresses"]
            data = base64.b64decode(req["Content"]["Raw"]["Data"], validate=True)
        except (ValueError, KeyError, TypeError):
            return self.error(400, "BadRequestException", "invalid request")
        if len(to) != 1:
            return self.error(400, "BadRequestException", "one recipient expected by this test server")
        if to[0] in self.server.reject:
            return self.error(400, "MessageRejected", "Email address is not verified. The following identities "
                                                      f"failed the check in region EU-WEST-1: {to[0]}")
        row = {"to": to[0]}
        if self.server.keep:
            row["raw"] = data
            row["tags"] = req.get("EmailTags")
        with self.server.lock:
            self.server.accepted.append(row)
        if action == "drop":
            return self.drop()
        self.reply(200, {"MessageId": f"0100{uuid.uuid4().hex}-000000"})


HANDLERS = {"postmark": PostmarkHandler, "mailgun": MailgunHandler, "ses": SesHandler}


def start(provider: str, *, keep: bool = True) -> Fake:
    return Fake(HANDLERS[provider], keep=keep).start()


def parse_raw(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


if __name__ == "__main__":  # the benchmark runs a server in a process of its own
    server = Fake(HANDLERS[sys.argv[1]], keep=False)
    print(server.port, flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()  # until the parent closes our stdin
    print(sum(server.recipients().values()), flush=True)
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(ru.ru_utime + ru.ru_stime, flush=True)
