"""The MIME byte template: substitution survives quoted-printable, dot-stuffing, folded headers."""

from __future__ import annotations

import email
import email.policy
import re

import pytest
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
    assert re.search(rb"\r\nSubject: [^\r]+\r\n =\?utf-8\?b\?", head), "the long subject is folded"
    assert all(len(line) <= 78 for line in head.split(b"\r\n") if not line.startswith(b"List-Unsubscribe:"))
    assert all(len(w) <= 75 for w in re.findall(rb"=\?[^?]+\?[bq]\?[^?]*\?=", head))
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


@pytest.mark.parametrize("subject", [
    "嵌入式AI简报 (2026-11-23)：" + "/".join(f"主题{i}端侧INT4量化" for i in range(60)),  # 60 topics
    "Embedded AI report: " + " ".join(f"topic-{i}" for i in range(300)),  # long ASCII, breakable
    "x" * 1500,  # one unbreakable ASCII word longer than a line may be
    "=?utf-8?q?not-an-encoded-word?= ü\r\nBcc: injected@example.org",
])
def test_long_or_tricky_subjects_fold_within_limits_and_decode_back(tmp_path, subject):
    settings = load_settings(cwd=tmp_path)
    r = rendition()
    r = Rendition(**{**r.__dict__, "metadata": {"subject": subject}})
    raw = build_template(r, settings).render("reader@example.com", URL)
    head = raw.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        assert len(line) <= (998 if line.startswith(b"List-Unsubscribe:") else 78), line
    assert all(len(w) <= 75 for w in re.findall(rb"=\?[^?]+\?[bq]\?[^?]*\?=", head))
    assert b"\r\nBcc:" not in head
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Subject"] == " ".join(subject.replace("\r", " ").replace("\n", " ").split()) \
        or msg["Subject"] == subject.replace("\r", " ").replace("\n", " ")
