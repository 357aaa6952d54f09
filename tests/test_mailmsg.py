"""The MIME byte template: substitution survives quoted-printable, dot-stuffing, no folding."""

from __future__ import annotations

import email
import email.policy
import re

from publisher.channels.base import Rendition

from publisher.mailmsg import build_template, qp_fragment, sample_eml
from publisher.settings import load_settings

URL = "https://example.org/u?token=" + "a.b=c&d" * 30 + "&x=.y"


def rendition() -> Rendition:
    html = ("<html><body><p>" + "长行" * 200 + "</p>\n.leading dot\n"
            '<a href="%%UNSUBSCRIBE_URL%%">退订</a> and again %%UNSUBSCRIBE_URL%%\n</body></html>')
    text = "第一行\n.dot line\n退订: %%UNSUBSCRIBE_URL%%\n"
    return Rendition(channel="email", issue="2026-11-23", body=html, media_type="text/html",
                     filename="2026-11-23.html", metadata={"subject": "嵌入式AI简报 (2026-11-23)：" + "量化/" * 30},
                     parts={"2026-11-23.txt": text})


def test_substitution_decodes_exactly_and_lines_stay_short(tmp_path):
    settings = load_settings(cwd=tmp_path)
    r = rendition()
    t = build_template(r, settings)
    raw = t.render("Reader.One@example.com", URL)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    text, html = (p.get_content() for p in msg.iter_parts())
    assert text.replace("\r\n", "\n") == r.parts["2026-11-23.txt"].replace("%%UNSUBSCRIBE_URL%%", URL).rstrip("\n")
    escaped = URL.replace("&", "&amp;")
    assert html.replace("\r\n", "\n") == r.body.replace("%%UNSUBSCRIBE_URL%%", escaped)
    assert msg["Subject"] == r.metadata["subject"]
    head, body = raw.split(b"\r\n\r\n", 1)
    assert not re.search(rb"\r\n[ \t]", head), "no folded header"
    assert all(len(line) <= 998 for line in head.split(b"\r\n"))
    assert all(len(line) <= 76 for line in body.split(b"\r\n")), "quoted-printable lines ≤ 76"
    assert msg["To"] == "Reader.One@example.com"


def test_wire_form_is_dot_stuffed_and_unstuffs_to_the_message(tmp_path):
    t = build_template(rendition(), load_settings(cwd=tmp_path))
    plain = t.render("a@example.com", URL)
    wire = t.render("a@example.com", URL, wire=True)
    assert re.search(rb"(?m)^\.[^.]", plain)  # the message has lines starting with "."
    assert not re.search(rb"(?m)^\.[^.]", wire)
    assert re.sub(rb"(?m)^\.\.", b".", wire) == plain
    assert all(not line.startswith(b".") for line in qp_fragment("." * 300).split(b"\r\n"))


def test_message_id_is_deterministic_per_issue_and_recipient(tmp_path):
    settings = load_settings(cwd=tmp_path)
    t = build_template(rendition(), settings)
    assert t.message_id("a@example.com") == t.message_id("A@Example.com")
    assert t.message_id("a@example.com") != t.message_id("b@example.com")
    assert t.message_id("a@example.com").endswith("@example.org>")
    eml = sample_eml(rendition(), settings)
    assert b"token=SAMPLE-TOKEN" in eml and b"%%UNSUBSCRIBE_URL%%" not in eml
