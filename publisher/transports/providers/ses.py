"""Amazon SES v2: `POST /v2/email/outbound-emails` (SendEmail) with raw content — the same MIME
message the SMTP transport sends (publisher/mailmsg.py: the reader's own unsubscribe link,
List-Unsubscribe and List-Unsubscribe-Post, Message-ID) — one call per reader, signed with
AWS Signature Version 4 by botocore's signer (botocore.auth.SigV4Auth: the AWS SDK's own, kept by
AWS; a hand-written canonical request is easy to get subtly wrong and buys nothing).

Errors (restJson: `x-amzn-ErrorType` header / `__type` and `message` in the body):
TooManyRequestsException (429) and 5xx are retried after back-off (as the AWS SDKs do);
MessageRejected fails that reader (not bounced; the same rejection for BREAKER_SAME readers in a
row stops the run: it is then the sender's problem, e.g. the sandbox); credentials, signature,
suspended or paused account, unverified MAIL FROM domain, the daily quota (LimitExceeded) stop
the run, resumable; anything else refuses the call as a campaign fault.

SES has no message search: a call whose reply is lost is ambiguous — [email] ambiguous decides
(resend: the reader may get two copies with the same Message-ID, counted; skip: never twice, but
maybe none).
"""

from __future__ import annotations

import base64
import json
import os

import requests

from publisher.errors import ConfigError
from publisher.transports.providers.base import SENT, Fault, Outcome, Provider, Reader, http, tag_of

FATAL = {"AccountSuspendedException", "SendingPausedException", "MailFromDomainNotVerifiedException",
         "LimitExceededException", "NotFoundException", "AccessDeniedException", "UnrecognizedClientException",
         "InvalidSignatureException", "SignatureDoesNotMatch", "IncompleteSignature", "InvalidClientTokenId",
         "ExpiredTokenException", "MissingAuthenticationToken"}
READER = {"MessageRejected"}


class Ses(Provider):
    name = "ses"
    table = "ses"
    batch_limit = 1  # one raw message, one reader, a call
    max_message_bytes = 40 * 1024 * 1024  # SES v2 API: 40 MB a message
    reconciles = False

    def __init__(self, settings, content, template):
        super().__init__(settings, content, template)
        from botocore.auth import SigV4Auth
        from botocore.credentials import Credentials

        cfg = settings["ses"]
        self.region = settings.require("ses", "region", "the AWS region of your SES account, e.g. eu-west-1")
        if not all(ch.isalnum() or ch == "-" for ch in self.region):
            raise ConfigError(f"[ses] region {self.region!r} is not an AWS region name: fix it in {settings.where()}")
        self.api = (cfg["api_base"] or f"https://email.{self.region}.amazonaws.com").rstrip("/")
        token_var = cfg["session_token_env"]
        creds = Credentials(settings.secret("ses", "access_key_id_env"),
                            settings.secret("ses", "secret_access_key_env"),
                            os.environ.get(token_var) or None if token_var else None)
        self.signer = SigV4Auth(creds, "ses", self.region)
        self.config_set = cfg["configuration_set"]
        self.from_address = content.from_address

    def describe(self) -> str:
        return f"ses ({self.region})"

    def prepare(self, batch_key: str, readers: list[Reader]) -> bytes:
        (r,) = readers
        raw = self.template.render(r.email, r.unsubscribe_url)
        body = {"FromEmailAddress": self.from_address, "Destination": {"ToAddresses": [r.email]},
                "Content": {"Raw": {"Data": base64.b64encode(raw).decode("ascii")}},
                "EmailTags": [{"Name": "publisher-issue", "Value": tag_of(self.content.issue)},
                              {"Name": "publisher-batch", "Value": batch_key}]}
        if self.config_set:
            body["ConfigurationSetName"] = self.config_set
        return json.dumps(body).encode("ascii")

    def send(self, session: requests.Session, payload: bytes, readers: list[Reader]) -> dict[str, Outcome]:
        from botocore.awsrequest import AWSRequest

        url = f"{self.api}/v2/email/outbound-emails"
        req = AWSRequest(method="POST", url=url, data=payload, headers={"Content-Type": "application/json"})
        self.signer.add_auth(req)
        resp = http(session, "POST", url, timeout=self.timeout, what="SES SendEmail", data=payload,
                    headers=dict(req.headers.items()))
        if resp.status_code == 200:
            return {readers[0].email: SENT}
        kind, message = error_of(resp)
        if resp.status_code in (401, 403) or kind in FATAL:
            raise self.fatal(f"SES refused SendEmail ({kind})", resp,
                             "check the credentials ([ses] *_env), [ses] region, the account's sending status "
                             "and quota in the SES console; then run the push again")
        if kind in READER:
            return {readers[0].email: Outcome("failed", resp.status_code, f"SES {kind}: {message}")}
        raise Fault(f"SES refused SendEmail: {resp.status_code} {kind}: {message}", resp.status_code)


def error_of(resp: requests.Response) -> tuple[str, str]:
    """(error type, message) of an SES v2 error answer."""
    kind = resp.headers.get("x-amzn-ErrorType", "")
    message = ""
    try:
        body = resp.json()
        if isinstance(body, dict):
            kind = kind or str(body.get("__type", ""))
            message = str(body.get("message") or body.get("Message") or "")
    except ValueError:
        message = resp.text[:300]
    kind = kind.split(":", 1)[0].rsplit("#", 1)[-1]
    return kind or f"HTTP{resp.status_code}", message[:300]
