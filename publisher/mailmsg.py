"""The newsletter as a MIME message: built ONCE per issue as a byte template, personalised per
recipient by byte substitution.

The message is multipart/alternative — text/plain first, HTML last — both UTF-8 in
quoted-printable. Per recipient only three things change: `To`, `Message-ID` and the
unsubscribe URL (in the `List-Unsubscribe` header, the text part and the HTML part). The
template keeps those as slots between byte chunks; rendering a recipient's message is a join.

Transfer encoding and substitution: the channel writes the literal token `%%UNSUBSCRIBE_URL%%`
in both parts. Each part is quoted-printable encoded in segments split at that token, and the
slot sits between two soft line breaks (`=\\r\\n`) on a line of its own, so quoted-printable
never wraps across it. At substitution the URL itself is quoted-printable encoded (`=` becomes
`=3D`, long URLs get soft breaks) and, in the HTML part, HTML-escaped first (`&` → `&amp;`).
Decoded, the parts read exactly as the channel wrote them with the token replaced.

Headers follow RFC 5322 and RFC 2047: non-ASCII text becomes base64 encoded words of at most 75
characters (each holding whole UTF-8 characters), and every header is folded (CRLF + space) at
whitespace so that no line exceeds 78 characters where a break is possible (an unbreakable run of
ASCII longer than that is encoded too, so no line can reach the 998-character limit). Message-IDs are
deterministic per (issue, recipient), so a re-sent copy carries the same Message-ID and mail
systems that de-duplicate by Message-ID show it once.
"""

from __future__ import annotations

import binascii
import datetime as dt
import hashlib
import html
import re
from base64 import b64encode
from dataclasses import dataclass
from email.utils import format_datetime

from publisher.addresses import valid_address
from publisher.channels.base import Rendition
from publisher.errors import ConfigError
from publisher.registry import mail_channel, mail_table
from publisher.settings import valid_unsubscribe_url
from publisher.tokens import UNSUBSCRIBE_PLACEHOLDER, make_token, unsubscribe_url

PLACEHOLDER = UNSUBSCRIBE_PLACEHOLDER  # what the mail channel writes where the reader's link goes
CRLF = b"\r\n"
_SLOT = re.compile(rb"\x00([a-z_]+)\x00")
SLOTS = ("to", "msgid", "unsub_hdr", "unsub_text", "unsub_html")


def _slot(name: str) -> bytes:
    return b"\x00" + name.encode() + b"\x00"


LINE_MAX = 78  # RFC 5322 2.1.1: SHOULD (998 MUST)
WORD_BYTES = 42  # UTF-8 bytes per encoded word: "=?utf-8?b?" + 56 base64 + "?=" = 68 characters


def _encoded_words(text: str) -> list[str]:
    words, chunk = [], ""
    for ch in text:
        if len((chunk + ch).encode("utf-8")) > WORD_BYTES:
            words.append(chunk)
            chunk = ""
        chunk += ch
    if chunk:
        words.append(chunk)
    return [f"=?utf-8?b?{b64encode(w.encode('utf-8')).decode('ascii')}?=" for w in words]


def header_tokens(text: str) -> list[str]:
    """Text as header tokens to be joined by whitespace: ASCII words as they are; RFC 2047
    encoded words (≤ 75 characters each) for non-ASCII text, control characters, text that
    looks like an encoded word, or a word too long to fit on a line."""
    text = text.replace("\r", " ").replace("\n", " ")
    if text.isascii() and not re.search(r"[\x00-\x1f\x7f]|=\?", text):
        words = text.split()
        if all(len(w) <= LINE_MAX - 12 for w in words):
            return words
    return _encoded_words(text)


def encode_header_text(text: str) -> str:
    """ASCII text as is; otherwise RFC 2047 base64 encoded words (each ≤ 75 chars), unfolded."""
    return " ".join(header_tokens(text))


def fold(name: str, tokens: list[str]) -> str:
    """`Name: tok tok …` folded with CRLF + space so that each line stays within 78 characters."""
    lines, line = [], f"{name}:"
    for tok in tokens:
        if len(line) + 1 + len(tok) > LINE_MAX and line != f"{name}:":
            lines.append(line)
            line = ""
        line += " " + tok
    lines.append(line)
    return "\r\n".join(lines)


_ATEXT_NAME = re.compile(r"[A-Za-z0-9 !#$%&'*+\-/=?^_`{|}~.]+")


def _phrase(name: str, *, quote_dots: bool = True) -> list[str]:
    """A display name (From, List-Id) as header tokens that read back as that one name: plain
    words as they are, else RFC 2047 encoded words — so a comma, quote, `<` or `@` in the name
    never splits it into two mailboxes."""
    if name.isascii() and _ATEXT_NAME.fullmatch(name) and "=?" not in name:
        return name.split() if "." not in name or not quote_dots else [f'"{name}"']
    return _encoded_words(name.replace("\r", " ").replace("\n", " "))


def _address(name: str, addr: str) -> list[str]:
    """A mailbox as header tokens."""
    return [*_phrase(name), f"<{addr}>"] if name else [addr]


def _qp(data: bytes) -> bytes:
    """Quoted-printable body encoding with CRLF line ends (binascii: C speed)."""
    return binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)


_QP_SAFE = re.compile(rb"[!-~]*")


def qp_fragment(value: str) -> bytes:
    """A substituted value as quoted-printable: `=` escaped, soft breaks every ≤ 75 chars, and
    never a "." at the start of a line (the template is dot-stuffed once, values are not)."""
    raw = value.encode("utf-8")
    if _QP_SAFE.fullmatch(raw):  # fast path: printable ASCII, as URLs are
        enc = raw.replace(b"=", b"=3D")
        lines = []
        i, n = 0, len(enc)
        while i < n:
            j = min(i + 73, n)
            if j < n:
                k = enc.rfind(b"=", j - 2, j)  # do not split an =XX escape
                if k != -1:
                    j = k
            line = enc[i:j]
            if line[:1] == b".":
                line = b"=2E" + line[1:]
            lines.append(line)
            i = j
        return b"=\r\n".join(lines)
    return _qp_fragment_slow(raw)


def _qp_fragment_slow(raw: bytes) -> bytes:
    out = bytearray()
    line = 0
    for b in raw:
        piece = bytes([b]) if (33 <= b <= 126 and b != 61) else b"=%02X" % b
        if line + len(piece) > 75:
            out += b"=\r\n"
            line = 0
        if line == 0 and b == 46:  # never a "." at the start of a line: the template is pre-dot-stuffed
            piece = b"=2E"
        out += piece
        line += len(piece)
    return bytes(out)


def _encode_part(text: str) -> bytes:
    """QP-encode a part, leaving a slot (on a line of its own) where each placeholder was."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")
    if not text.endswith("\r\n"):
        text += "\r\n"
    segments = text.split(PLACEHOLDER)
    out = []
    for i, seg in enumerate(segments):
        enc = _qp(seg.encode("utf-8")) if seg else b""
        if i > 0:
            out.append(b"=\r\n" + _slot("{kind}") + b"=\r\n")
        out.append(enc)
    return b"".join(out)


def message_id_for(issue: str, email: str, list_id: str, domain: str) -> str:
    digest = hashlib.sha256(f"{list_id}\0{issue}\0{email.strip().lower()}".encode()).hexdigest()[:32]
    return f"<{issue}.{digest}@{domain}>"


@dataclass(frozen=True)
class MessageTemplate:
    """A message as byte chunks around per-recipient slots; render() fills them in."""

    chunks: tuple[bytes, ...]
    slots: tuple[str, ...]
    wire_chunks: tuple[bytes, ...]  # the same, SMTP dot-stuffed (slot values never start a line with ".")
    issue: str
    list_id: str
    domain: str
    subject: str
    envelope_from: str

    def render(self, email: str, unsubscribe_url: str, *, wire: bool = False, message_id: str | None = None) -> bytes:
        """The recipient's message; `wire=True`: dot-stuffed, ready for SMTP DATA. `message_id`:
        this recipient's, when the caller has it already (self.message_id(email))."""
        values = {
            "to": email.encode("ascii", "strict") if email.isascii() else email.encode("utf-8"),
            "msgid": (message_id or self.message_id(email)).encode("ascii"),
            "unsub_hdr": unsubscribe_url.encode("ascii", "replace"),
            "unsub_text": qp_fragment(unsubscribe_url),
            "unsub_html": qp_fragment(html.escape(unsubscribe_url, quote=True)),
        }
        chunks = self.wire_chunks if wire else self.chunks
        parts = [chunks[0]]
        for name, chunk in zip(self.slots, chunks[1:], strict=True):
            parts.append(values[name])
            parts.append(chunk)
        return b"".join(parts)

    def message_id(self, email: str) -> str:
        return message_id_for(self.issue, email, self.list_id, self.domain)


def text_part_of(rendition: Rendition) -> str:
    name = f"{rendition.issue}.txt"
    if name in rendition.parts:
        return rendition.parts[name]
    txt = [v for k, v in rendition.parts.items() if k.endswith(".txt")]
    if not txt:
        raise ConfigError(f"the email rendition of {rendition.issue} has no text part ({name}); "
                          "re-render it with the email channel")
    return txt[0]


def sender_name(settings) -> str:
    """The From name: `[email] from_name`, else the newsletter's name."""
    return mail_table(settings)["from_name"] or settings["newsletter"]["name"]


def from_mailbox(settings) -> tuple[str, str]:
    """(name, address) of every message's From."""
    return sender_name(settings), mail_table(settings)["from_address"]


def from_tokens(settings) -> list[str]:
    """The From header as tokens — the one From builder: build_template folds them into the
    newsletter's byte template; `from_header` joins them for an EmailMessage (the confirmation
    email of /subscribe) or a provider's API. Not `email.utils.formataddr`: it would put a name
    like `=?utf-8?q?x?=` into a quoted string that readers decode as an encoded word."""
    return _address(*from_mailbox(settings))


def list_id_tokens(settings, list_id: str) -> list[str]:
    """The List-Id header as tokens: the sender's name (as From shows it) and `<list_id>`."""
    name = sender_name(settings)
    return [*_phrase(name, quote_dots=False), f"<{list_id}>"] if name else [f"<{list_id}>"]


def from_header(settings) -> str:
    """The From header's value, unfolded, for a provider's API (see `from_tokens`)."""
    return " ".join(from_tokens(settings))


def from_line(settings) -> str:
    """The From header line, folded, without its CRLF (see `from_tokens`)."""
    return fold("From", from_tokens(settings))


def build_template(rendition: Rendition, settings, *, subject_prefix: str = "",
                   date: dt.datetime | None = None) -> MessageTemplate:
    """Build the byte template of an email rendition (see the module docstring)."""
    table = mail_channel()
    em = settings[table]
    from_addr = settings.require(table, "from_address", "the sender of the newsletter")
    if not valid_address(from_addr):
        raise ConfigError(f"[{table}] from_address {from_addr!r} is not an email address: fix it in {settings.where()}")
    domain = from_addr.rsplit("@", 1)[1]
    list_id = settings.require(table, "list_id", "the List-Id header, e.g. news.example.org")
    meta = rendition.metadata
    subject = subject_prefix + str(meta.get("subject") or rendition.issue)
    date = date or dt.datetime.now(dt.UTC)
    text = text_part_of(rendition)
    boundary = "==pub_" + hashlib.sha256((rendition.body + text).encode("utf-8")).hexdigest()[:28]

    headers = [
        from_line(settings),
        "To: \x00to\x00",
        fold("Subject", header_tokens(subject)),
        f"Date: {format_datetime(date)}",
        "Message-ID: \x00msgid\x00",
        "MIME-Version: 1.0",
    ]
    if em["reply_to"]:
        headers.append(f"Reply-To: {em['reply_to']}")
    headers.append(fold("List-Id", list_id_tokens(settings, list_id)))
    unsub = "List-Unsubscribe: <\x00unsub_hdr\x00>"
    if em["unsubscribe_mailto"]:
        mailto = em["unsubscribe_mailto"]
        if not mailto.startswith("mailto:"):
            mailto = "mailto:" + mailto
        unsub += f",\r\n <{mailto}>"  # the per-reader URL is long: the mailto on a line of its own
    headers.append(unsub)
    headers.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    headers.append(f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"')
    head = ("\r\n".join(headers) + "\r\n\r\n").encode("utf-8")

    b = boundary.encode("ascii")
    part_head = b"Content-Type: %s; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    body = (
        b"This is a multipart message in MIME format.\r\n"
        + b"--" + b + CRLF + part_head % b"text/plain"
        + _encode_part(text).replace(b"{kind}", b"unsub_text")
        + b"--" + b + CRLF + part_head % b"text/html"
        + _encode_part(rendition.body).replace(b"{kind}", b"unsub_html")
        + b"--" + b + b"--\r\n"
    )
    pieces = _SLOT.split(head + body)
    chunks = tuple(pieces[0::2])
    slots = tuple(p.decode() for p in pieces[1::2])
    wire = tuple(_SLOT.split(re.sub(rb"(?m)^\.", b"..", head + body))[0::2])
    return MessageTemplate(chunks=chunks, slots=slots, wire_chunks=wire, issue=rendition.issue, list_id=list_id,
                           domain=domain, subject=subject, envelope_from=from_addr)


def unsubscribe_url_for(settings, email: str, secret: str | None) -> str:
    table = mail_channel()
    template = settings.require(table, "unsubscribe_url", "the https:// link with {token}")
    token = make_token(secret, settings[table]["list_id"], email) if secret else "SAMPLE-TOKEN"
    return unsubscribe_url(template, token)


def check_unsubscribe_url(settings) -> None:
    table = mail_channel()
    url = settings.require(table, "unsubscribe_url", "the https:// link with {token}")
    if not valid_unsubscribe_url(url):
        raise ConfigError(f"[{table}] unsubscribe_url must be an http(s) URL with {{token}}: fix it in {settings.where()}")


def sample_recipient(settings) -> str:
    """The address a sample message is shown to: a reader at the sender's own domain."""
    return "reader@" + mail_table(settings)["from_address"].rpartition("@")[2]


def sample_eml(rendition: Rendition, settings, email: str | None = None,
               secret: str | None = None) -> bytes:
    """A complete .eml of the rendition addressed to `email` (default: `sample_recipient`; token
    "SAMPLE-TOKEN" without a secret)."""
    email = email or sample_recipient(settings)
    template = build_template(rendition, settings)
    return template.render(email, unsubscribe_url_for(settings, email, secret))


def readable_message(raw: bytes) -> str:
    """An email message as a person reads it (for --dry-run): decoded headers, the text/plain
    part decoded from quoted-printable/base64, and the size of the HTML part."""
    from email import policy
    from email.parser import BytesParser

    msg = BytesParser(policy=policy.default).parsebytes(raw)
    lines = [f"{k}: {v}" for k, v in msg.items()]
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    lines.append("")
    lines.append(text.get_content().rstrip("\n") if text is not None else "(no text/plain part)")
    if html is not None:
        size = len(html.get_content().encode("utf-8"))
        lines += ["", f"[text/html part: {size:,} bytes; see it with `publisher preview` or "
                      "`publisher render ISSUE -c email --out DIR`]"]
    return "\n".join(lines)
