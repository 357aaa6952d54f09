"""Posting to Telegram through the Bot API (`sendMessage`, parse_mode HTML), one message at a
time, resumable per message.

The ledger row of the push holds, in its details, each message sent (its number, a digest of its
text, Telegram's message_id) and the message being sent. Before a request the message is recorded
as being sent; after Telegram's answer it is recorded as sent. A re-run sends only what is left.
A message left "being sent" by a crash may have reached the chat (Telegram has no idempotency
key), so a re-run stops and says so; `--force` sends it again once you have looked. A message
whose text changed since it was sent stops the push too (the chat holds the old one).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import requests
from publisher.channels.base import Rendition

from publisher.errors import TransportError
from publisher.redact import redact
from publisher.stores.ledger import checkpoint
from publisher.transports.base import PushContext, PushResult, Transport

TIMEOUT = 30  # seconds per request
RETRIES_429 = 3  # "Too Many Requests": wait retry_after (at most MAX_WAIT) and try again
MAX_WAIT = 60


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class _NotSent(TransportError):
    """Telegram answered that it did not send the message (safe to try again)."""


class TelegramTransport(Transport):
    channel = "telegram"

    @classmethod
    def check_config(cls, settings) -> None:
        settings.require("telegram", "chat_id", "the chat the bot posts to: @channelname or its numeric id")
        settings.secret("telegram", "token_env")

    @classmethod
    def counts(cls, ledger, record) -> dict[str, int]:
        """`messages`: how many a finished push posted; `messages_sent`: how many so far."""
        details = record.details or {}
        if details.get("message_ids"):
            return {"messages": len(details["message_ids"])}
        sent = details.get("sent_messages") or {}
        return {"messages_sent": len(sent)} if sent else {}

    def push(self, rendition: Rendition, ctx: PushContext) -> PushResult:
        messages = rendition.messages or (rendition.body,)
        cfg = ctx.settings["telegram"]
        chat = str(cfg["chat_id"])
        if ctx.dry_run:
            return PushResult(summary=f"dry run: would send {len(messages)} message(s) to {chat}")
        token = ctx.settings.secret("telegram", "token_env")
        sent = self._progress(ctx, messages)
        for n, text in enumerate(messages, 1):
            if str(n) in sent:
                continue
            self._record(ctx, sending_message=n)
            checkpoint("telegram:sending")
            try:
                message_id = self._send(cfg, token, chat, text)
            except _NotSent:
                self._record(ctx, sending_message=None)
                raise
            sent[str(n)] = {"sha": _digest(text), "id": message_id}
            self._record(ctx, sent_messages=sent, sending_message=None)
            checkpoint("telegram:sent")
        ids = [sent[str(n)]["id"] for n in range(1, len(messages) + 1)]
        url = f"https://t.me/{chat[1:]}/{ids[0]}" if chat.startswith("@") else None
        return PushResult(remote_id=str(ids[0]), url=url,
                          details={"message_ids": ids, "sent_messages": {}, "sending_message": None},
                          summary=f"{len(ids)} message(s) sent to {chat}")

    # ---- the ledger's account of this push ---------------------------------------------------

    @staticmethod
    def _record(ctx: PushContext, **details: Any) -> None:
        ctx.ledger.update(ctx.issue.slug, "telegram", details=details)

    @staticmethod
    def _progress(ctx: PushContext, messages: tuple[str, ...]) -> dict[str, dict]:
        """The messages already sent by an earlier, interrupted run (checked against the texts now)."""
        record = ctx.ledger.get(ctx.issue.slug, "telegram")
        details = (record.details if record else None) or {}
        sent = dict(details.get("sent_messages") or {})
        for key, done in sent.items():
            n = int(key)
            if n > len(messages) or done["sha"] != _digest(messages[n - 1]):
                raise TransportError(
                    f"telegram message {n} changed since it was sent (message_id {done['id']}), or the post "
                    "has fewer messages now; the chat holds the old text. Delete the sent messages in the chat "
                    "and push with --force to send the post anew")
        pending = details.get("sending_message")
        if pending and str(pending) not in sent and not ctx.force:
            raise TransportError(
                f"telegram message {pending} of {len(messages)} may have been sent: the last push stopped "
                "between sending it and recording Telegram's answer. Look in the chat; then push with --force "
                "to send it (again) and the rest")
        return sent

    # ---- the Bot API ------------------------------------------------------------------------------

    @staticmethod
    def _send(cfg, token: str, chat: str, text: str) -> int:
        url = f"{cfg['api_base'].rstrip('/')}/bot{token}/sendMessage"
        payload = {"chat_id": chat, "text": text, "parse_mode": "HTML",
                   "link_preview_options": {"is_disabled": not cfg["link_previews"]}}
        for _ in range(RETRIES_429 + 1):
            try:
                resp = requests.post(url, json=payload, timeout=TIMEOUT)
            except requests.ConnectionError as exc:
                if "NewConnectionError" in repr(exc) or isinstance(exc, requests.ConnectTimeout):
                    raise _NotSent(f"telegram: cannot reach {cfg['api_base']}: {redact(str(exc), secrets=(token,))}; "
                                   "check [telegram] api_base and the network, then push again") from None
                raise TransportError(f"telegram: the connection broke during sendMessage "
                                     f"({redact(str(exc), secrets=(token,))})") from None
            except requests.RequestException as exc:
                raise TransportError(f"telegram: sendMessage failed: {redact(str(exc), secrets=(token,))}") from None
            try:
                data = resp.json()
            except ValueError:
                raise TransportError(f"telegram: the answer to sendMessage is not JSON (HTTP {resp.status_code})") from None
            if data.get("ok"):
                return int(data["result"]["message_id"])
            retry = (data.get("parameters") or {}).get("retry_after")
            if data.get("error_code") == 429 and retry is not None:
                time.sleep(min(float(retry), MAX_WAIT))
                continue
            raise _NotSent(f"telegram: sendMessage refused (error {data.get('error_code')}): "
                           f"{redact(str(data.get('description')), secrets=(token,))}; {_advice(data)}")
        raise _NotSent(f"telegram: still rate-limited after {RETRIES_429} waits; push again later")


def _advice(data: dict) -> str:
    code = data.get("error_code")
    if code == 401:
        return "check the bot token in the environment variable named by [telegram] token_env"
    if code in (400, 403):
        return "check [telegram] chat_id and that the bot is a member (an admin, in a channel) of that chat"
    return "push again"
