"""Mailgun: `POST /v3/<domain>/messages` with up to 1,000 `to` recipients and
`recipient-variables`, so Mailgun sends each reader a message of its own: the reader's
unsubscribe URL is %recipient.unsub% (text, List-Unsubscribe header) and %recipient.unsub_html%
(the HTML part, escaped). Basic auth `api:<key>`; US (api.mailgun.net) or EU
(api.eu.mailgun.net) base URL in [mailgun] api_base.

Answers: 200 `{"id", "message"}` — the whole call is accepted; 401 stops the run (key); any other
4xx is a campaign fault (the call is refused as a whole: sender, domain, content); 429 and 5xx are
retried.

Reconciliation after a lost reply: the events API, `GET /v3/<domain>/events?event=accepted&
tags=publisher-ISSUE&begin=…` paged through `paging.next`; a reader with an `accepted` event has
the message. Events lag behind sending: [mailgun] reconcile_delay.
"""

from __future__ import annotations

import json
import uuid

import requests

from publisher.errors import ConfigError, TransportError
from publisher.transports.providers.base import SENT, Fault, Outcome, Provider, Reader, http, tag_of

MAX_PAGES = 10_000


class Mailgun(Provider):
    name = "mailgun"
    table = "mailgun"
    batch_limit = 1000
    max_message_bytes = 25 * 1024 * 1024  # Mailgun: 25 MB a message
    reconciles = True

    def __init__(self, settings, content, template):
        super().__init__(settings, content, template)
        cfg = settings["mailgun"]
        self.api = cfg["api_base"].rstrip("/")
        self.domain = settings.require("mailgun", "domain", "your sending domain at Mailgun")
        if "/" in self.domain or "?" in self.domain:
            raise ConfigError(f"[mailgun] domain {self.domain!r} is not a domain name: fix it in {settings.where()}")
        self.auth = ("api", settings.secret("mailgun", "api_key_env"))
        from publisher.mailmsg import PLACEHOLDER

        c = content
        # Mailgun substitutes %recipient.x% anywhere: the issue's own text must not name a variable
        # (HTML: a character reference; text: a WORD JOINER after the %, invisible)
        html_body = c.html.replace("%recipient.", "&#37;recipient.")
        text_body = c.text.replace("%recipient.", "%\u2060recipient.")
        subject = c.subject.replace("%recipient.", "%\u2060recipient.")
        self.fixed = [("from", c.from_header), ("subject", subject),
                      ("html", html_body.replace(PLACEHOLDER, "%recipient.unsub_html%")),
                      ("text", text_body.replace(PLACEHOLDER, "%recipient.unsub%")),
                      ("h:List-Id", c.list_id_header),
                      ("h:List-Unsubscribe", c.list_unsubscribe("%recipient.unsub%")),
                      ("h:List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
                      ("o:tag", tag_of(c.issue)), ("o:tracking", "no"),
                      ("v:publisher-issue", c.issue)]
        if c.reply_to:
            self.fixed.append(("h:Reply-To", c.reply_to))
        self.boundary = "publisher-" + uuid.uuid4().hex
        self.fixed_body = b"".join(self._part(k, v) for k, v in self.fixed)  # the issue's part, once

    def describe(self) -> str:
        return f"mailgun ({self.domain} via {self.api})"

    def prepare(self, batch_key: str, readers: list[Reader]) -> list[tuple[str, str]]:
        import html

        variables = {r.email: {"unsub": r.unsubscribe_url, "unsub_html": html.escape(r.unsubscribe_url, quote=True),
                               "message_id": r.message_id} for r in readers}
        own = [("v:publisher-batch", batch_key), *(("to", r.email) for r in readers),
               ("recipient-variables", json.dumps(variables, ensure_ascii=False))]
        return b"".join([self.fixed_body, *(self._part(k, v) for k, v in own),
                         f"--{self.boundary}--\r\n".encode("ascii")])

    def _part(self, name: str, value: str) -> bytes:
        """One multipart/form-data field (RFC 7578); the boundary is random and checked absent."""
        data = value.encode("utf-8")
        if self.boundary.encode("ascii") in data:
            raise TransportError("a Mailgun field contains the multipart boundary; run the push again")
        return (f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode("ascii")
                + data + b"\r\n")

    def send(self, session: requests.Session, payload, readers: list[Reader]) -> dict[str, Outcome]:
        resp = http(session, "POST", f"{self.api}/v3/{self.domain}/messages", timeout=self.timeout,
                    what="Mailgun messages", data=payload, auth=self.auth,
                    headers={"Content-Type": f"multipart/form-data; boundary={self.boundary}"})
        if resp.status_code == 401:
            raise self.fatal("Mailgun refused the API key", resp,
                             "check the key in the variable [mailgun] api_key_env names")
        if resp.status_code == 404:
            raise self.fatal(f"Mailgun does not know the domain {self.domain!r}", resp,
                             "check [mailgun] domain and api_base (US or EU region)")
        if resp.status_code != 200:
            raise Fault(f"Mailgun refused the call: {resp.status_code} {_message(resp)}", resp.status_code)
        return dict.fromkeys((r.email for r in readers), SENT)

    def reconcile(self, session: requests.Session, batch_key: str, started: float, emails: list[str]) -> set[str]:
        want = {e.lower(): e for e in emails}
        found: set[str] = set()
        url: str | None = f"{self.api}/v3/{self.domain}/events"
        params: dict | None = {"event": "accepted", "tags": tag_of(self.content.issue), "begin": f"{started - 60:.0f}",
                               "ascending": "yes", "limit": 300}
        for _ in range(MAX_PAGES):
            resp = http(session, "GET", url, timeout=self.timeout, what="Mailgun events", params=params,
                        auth=self.auth)
            try:
                body = resp.json()
            except ValueError:
                body = None
            if resp.status_code != 200 or not isinstance(body, dict):
                raise TransportError(f"Mailgun events answered {resp.status_code} {resp.text[:200]!r}: cannot "
                                     "reconcile a lost reply; run again later")
            items = body.get("items") or []
            for item in items:
                rcpt = str(item.get("recipient", "")).lower() if isinstance(item, dict) else ""
                if rcpt in want:
                    found.add(want[rcpt])
            nxt = (body.get("paging") or {}).get("next")
            if not items or not nxt or found == set(emails):
                return found
            if not str(nxt).startswith(self.api + "/"):  # never send the key to another host
                raise TransportError(f"Mailgun events paging points outside {self.api}: {str(nxt)[:100]!r}")
            url, params = nxt, None
        return found


def _message(resp: requests.Response) -> str:
    try:
        body = resp.json()
        return str(body.get("message", body))[:300]
    except ValueError:
        return resp.text[:300]
