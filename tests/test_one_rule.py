"""Issue 24, "one definition per rule": every entry point that checks an email address, an http(s)
URL or the unsubscribe URL asks the same function, so the same hostile inputs get the same answer."""

from __future__ import annotations

import io
import urllib.parse
from pathlib import Path

import pytest
from click.testing import CliRunner

from publisher.addresses import address_problem, valid_address
from publisher.errors import ConfigError
from publisher.settings import load_settings

GOOD = ["ed@example.org", "a.b+tag@mail.example.net", "用户@example.cn", "ed@例子.cn"]
HOSTILE = [
    "ed@localhost",            # not deliverable: no dot in the domain
    "ed@ex..org",              # an empty label
    "ed@host.test",            # a special-use name (RFC 6761)
    "ed@127.0.0.1", "ed@[127.0.0.1]",
    "Ed <ed@example.org>",     # a display name is not an address
    '"a b"@example.org',
    "ed@example.org\r\nBcc: x@example.org",  # header injection
    "ed@@example.org", "@example.org", "ed@", "ed", "",
    "e,d@example.org", "ed@exa mple.org",
    "x" * 250 + "@example.org",  # over 254 characters
    "a" * 100_000 + "@example.org", "a@" + "b." * 50_000 + "org",
]


@pytest.mark.parametrize("address", GOOD)
def test_the_rule_accepts_deliverable_addresses(address: str) -> None:
    assert address_problem(address) is None and valid_address(address)


@pytest.mark.parametrize("address", HOSTILE)
def test_the_rule_refuses_with_a_reason(address: str) -> None:
    assert address_problem(address) and not valid_address(address)


@pytest.mark.parametrize("key", ["from_address", "reply_to", "unsubscribe_mailto"])
@pytest.mark.parametrize("address", [a for a in HOSTILE if a])  # "" means "not set" in the config
def test_config_addresses_follow_the_rule(tmp_path: Path, key: str, address: str) -> None:
    cfg = tmp_path / "publisher.toml"
    cfg.write_text(f"[email]\n{key} = {_toml(address)}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"\[email\] {key} must be an address"):
        load_settings(cfg)


@pytest.mark.parametrize("address", GOOD)
def test_config_accepts_what_the_rule_accepts(tmp_path: Path, address: str) -> None:
    cfg = tmp_path / "publisher.toml"
    cfg.write_text(f"[email]\nfrom_address = {_toml(address)}\n", encoding="utf-8")
    assert load_settings(cfg)["email"]["from_address"] == address


def _toml(value: str) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


@pytest.mark.parametrize("address", [a for a in HOSTILE if a])
def test_push_to_follows_the_rule(address: str, tmp_path: Path, monkeypatch) -> None:
    from publisher.cli import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PUBLISHER_CONFIG", raising=False)
    r = CliRunner().invoke(cli, ["push", "x.md", "--channel", "email", "--to", address])
    assert r.exit_code == 2 and "is not an email address" in r.output, r.output


@pytest.mark.parametrize("address", HOSTILE + GOOD)
def test_init_sender_follows_the_rule(address: str) -> None:
    from publisher.scaffold import Answers, check_answers

    answers = Answers(name="N", sender=address, site="https://example.org")
    if address in GOOD:
        check_answers(answers)
    else:
        with pytest.raises(ConfigError, match="--sender"):
            check_answers(answers)


def test_the_subscriber_import_follows_the_rule(tmp_path: Path) -> None:
    from publisher.subscribers import SubscriberDB, import_csv

    rows = [a for a in HOSTILE if "\n" not in a and "," not in a and '"' not in a] + GOOD
    src = tmp_path / "in.csv"
    src.write_text("".join(f"{a},Name\n" for a in rows), encoding="utf-8")
    db = SubscriberDB(tmp_path / "s.db")
    imported, problems = import_csv(db, src)
    assert imported == len(GOOD), problems
    refused = {p.line for p in problems if p.level == "error"}
    assert refused == {i + 1 for i, a in enumerate(rows) if a not in GOOD}, problems


def test_the_subscribe_form_follows_the_rule(tmp_path: Path) -> None:
    from publisher.subscribe import make_subscribe_app

    cfg = tmp_path / "publisher.toml"
    cfg.write_text("""
[email]
from_address = "news@example.org"
list_id = "news.example.org"
subscribers_db = "subscribers.db"
[subscribe]
url = "https://example.org/subscribe"
confirm_url = "https://example.org/confirm?token={token}"
per_ip_per_hour = 1000
""", encoding="utf-8")
    submitted = []

    class Mailer:
        def submit(self, email, request):
            submitted.append(email)

    app = make_subscribe_app(load_settings(cfg), "s" * 32, mailer=Mailer())

    def post(address: str) -> str:
        body = urllib.parse.urlencode({"email": address}).encode()
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/subscribe", "CONTENT_LENGTH": str(len(body)),
                   "CONTENT_TYPE": "application/x-www-form-urlencoded", "wsgi.input": io.BytesIO(body),
                   "REMOTE_ADDR": "127.0.0.1", "QUERY_STRING": ""}
        status = []
        b"".join(app(environ, lambda s, h, *a: status.append(s)))
        return status[0]

    for address in HOSTILE:
        if address.strip() == address:
            assert post(address)[:3] in ("400", "413"), address[:80]  # 413: a form body over its bound
    assert submitted == []
    for address in GOOD:
        assert post(address).startswith("200"), address
    assert submitted == GOOD


@pytest.mark.parametrize("url", ["ftp://example.org/u?t={token}", "https://example.org/u",
                                 "https://example.org/u?t={token} x", "javascript:alert(1)//{token}",
                                 "//example.org/u?t={token}"])
def test_the_unsubscribe_url_has_one_rule(tmp_path: Path, url: str) -> None:
    from publisher.mailmsg import check_unsubscribe_url
    from publisher.settings import Settings, valid_unsubscribe_url

    assert not valid_unsubscribe_url(url)
    cfg = tmp_path / "publisher.toml"
    cfg.write_text(f"[email]\nunsubscribe_url = {_toml(url)}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unsubscribe_url"):
        load_settings(cfg)
    good = load_settings(tmp_path / "empty.toml") if (tmp_path / "empty.toml").write_text("") == 0 else None
    with pytest.raises(ConfigError, match="unsubscribe_url"):  # the send-time check is the same rule
        check_unsubscribe_url(Settings({**good.data, "email": {**good["email"], "unsubscribe_url": url}}))
    assert valid_unsubscribe_url("HTTPS://example.org/u?t={token}")


@pytest.mark.parametrize("url", ["https://example.org/x", "HTTP://Example.org", "http://h:8080/p?q"])
def test_every_is_http_asks_refs(url: str) -> None:
    from publisher.clicks import countable
    from publisher.linkcheck import checkable
    from publisher.refs import is_http

    assert is_http(url) and checkable(url) and countable(url)
    for bad in ("mailto:a@example.org", "ftp://example.org/", "javascript:x", "/local/path", "//example.org/x"):
        assert not is_http(bad) and not checkable(bad) and not countable(bad)


def test_every_is_https_asks_refs() -> None:
    """One "is this https" rule: the SNS certificate URL and the one-click unsubscribe warning."""
    from publisher.hooks import trusted_sns_url
    from publisher.refs import is_https

    good = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem"
    assert is_https(good) and is_https("HTTPS://example.org/") and trusted_sns_url(good)
    for bad in ("http://sns.us-east-1.amazonaws.com/x.pem", "//sns.us-east-1.amazonaws.com/x.pem",
                "ftp://sns.us-east-1.amazonaws.com/x.pem", " https://example.org/", "httpsx://example.org/"):
        assert not is_https(bad) and not trusted_sns_url(bad), bad


def test_no_inline_http_check_outside_refs() -> None:
    """`startswith(("http…`, `scheme in ("http", "https")` and `scheme == "https"` are written in
    publisher/refs.py only (`is_http`, `is_https`)."""
    import re

    root = Path(__file__).resolve().parents[1]
    inline = re.compile(r"""startswith\(\(?["']https?:|scheme(?:\.lower\(\))? (?:not )?in \(["']https?["']"""
                        r"""|\.scheme(?:\.lower\(\))? [=!]= ["']https?["']""")
    found = {p.relative_to(root).as_posix() for d in ("publisher", "channels") for p in (root / d).rglob("*.py")
             if inline.search(p.read_text(encoding="utf-8"))}
    assert found - {"publisher/refs.py"} == set(), found
    for violation in ('if url.startswith(("http://", "https://")):', 'ok = parts.scheme in ("http", "https")',
                      "ok = urlsplit(u).scheme.lower() not in ('https', 'http')", 'secure = parts.scheme == "https"',
                      'if not url.startswith("https://"):'):
        assert inline.search(violation), violation  # the scan catches each way of writing it


def test_one_plain_text_path() -> None:
    """The plain-text channel writes inline text through model.plain_text: one rule, strikethrough
    included (U+0336 overlay), and titles use the same function without the overlay."""
    from publisher.channels.markdown_writer import MailTextWriter, PlainTextWriter

    from publisher.model import (
        Code,
        Emphasis,
        Image,
        LineBreak,
        Link,
        SoftBreak,
        Strikethrough,
        Strong,
        Text,
        plain_text,
    )

    nodes = (Text("a *b* <i>"), Strikethrough((Text("old"), Strong((Text("x y"),)))), SoftBreak(),
             Emphasis((Link("https://example.org/?a=1&b=2", (Text("link"),)),)), LineBreak(),
             Code("`c`"), Image("https://example.org/i.png", "alt {{ x }}"),
             Link("https://example.org/", (Text("https://example.org/"),)))
    struck = plain_text(nodes, breaks="\n", strike=True)
    assert PlainTextWriter().inline(nodes) == struck
    assert "o\u0336l\u0336d\u0336x\u0336 y\u0336" in struck and "a *b* <i>" in struck and "alt {{ x }}" in struck
    assert plain_text(nodes) == "a *b* <i>oldx y link\n`c`alt {{ x }}https://example.org/"
    mail = MailTextWriter().inline(nodes)  # the text mail keeps URLs, and strikes the same way
    assert "o\u0336l\u0336d\u0336x\u0336 y\u0336" in mail and "link (https://example.org/?a=1&b=2)" in mail


@pytest.mark.parametrize("name", ["", "Plain News", "嵌入式AI简报", 'Ed "the" O\'Neil, Jr.', "=?utf-8?q?x?= a.b",
                                  "Ü" * 80])
def test_one_from_builder(tmp_path: Path, name: str) -> None:
    """The newsletter's From and the confirmation email's From are the same mailbox
    (mailmsg.from_mailbox): the name falls back to the newsletter's name, and every encoding of it
    decodes to what was configured."""
    import email
    import email.policy
    import email.utils

    from publisher.mailmsg import build_template, from_mailbox
    from publisher.subscribe import Mailer
    from tests.test_mailmsg import URL, rendition

    cfg = tmp_path / "publisher.toml"
    cfg.write_text(f"""
[newsletter]
name = "Fallback Weekly"
[email]
from_address = "news@example.org"
from_name = {_toml(name)}
list_id = "news.example.org"
subscribers_db = "subscribers.db"
[subscribe]
confirm_url = "https://example.org/confirm?token={{token}}"
""", encoding="utf-8")
    settings = load_settings(cfg)
    want = (name or "Fallback Weekly", "news@example.org")
    assert from_mailbox(settings) == want
    news = build_template(rendition(), settings).render("a@example.com", URL)
    confirm = Mailer(settings, "s" * 32).message("a@example.com", 1)
    for raw in (news, confirm):
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert len(msg.get_all("From")) == 1 and len(msg["From"].addresses) == 1, msg["From"]  # one mailbox
        assert _decoded_from(raw) == want


def _decoded_from(raw: bytes) -> tuple[str, str]:
    """(display name, address) of the From header, decoded by RFC 2047 itself (the email package
    puts a space between adjacent encoded words of a display name; RFC 2047 §6.2 drops it)."""
    import email
    import email.policy
    import re
    from email.header import decode_header, make_header

    value = re.sub(r"\r?\n[ \t]", " ", email.message_from_bytes(raw, policy=email.policy.compat32)["From"])
    m = re.fullmatch(r"(.*?)\s*<([^<>]+)>", value)
    if not m:
        return "", value.strip()
    phrase = m.group(1)
    if phrase.startswith('"') and phrase.endswith('"'):
        return re.sub(r"\\(.)", r"\1", phrase[1:-1]), m.group(2)
    return str(make_header(decode_header(phrase))), m.group(2)
