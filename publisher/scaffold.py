"""`publisher init`: a new newsletter's folder — publisher.toml with every identity key of its
own, a sample issue with an image (package data: publisher/samples/), and a .gitignore.

Nothing is overwritten: an existing publisher.toml or sample issue refuses the whole run before
anything is written; an existing .gitignore only gets the lines it lacks.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import string
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from .atomic import atomic_write
from .errors import ConfigError
from .settings import CONFIG_FILENAME, HEADER_KEYS, load_settings

# --license ID -> (name, url, badge): Creative Commons as its license chooser writes them
LICENSES = {
    "none": ("", "", ""),
    "CC0-1.0": ("CC0 1.0 通用", "https://creativecommons.org/publicdomain/zero/1.0/",
                "https://licensebuttons.net/p/zero/1.0/88x31.png"),
    **{
        f"CC-{code.upper()}-4.0": (f"知识共享 CC {code.upper()} 4.0 国际许可协议",
                                   f"https://creativecommons.org/licenses/{code}/4.0/",
                                   f"https://licensebuttons.net/l/{code}/4.0/88x31.png")
        for code in ("by", "by-sa", "by-nd", "by-nc", "by-nc-sa", "by-nc-nd")
    },
}
DEFAULT_CHANNELS = ("email", "web", "plaintext")
SAMPLE_IMAGE = "images/pipeline.png"
GITIGNORE = ".gitignore"


@dataclass
class Answers:
    name: str
    sender: str
    site: str
    tagline: str = ""
    license: str = "none"
    channels: list[str] = field(default_factory=lambda: list(DEFAULT_CHANNELS))
    account: str = ""  # the WeChat account's name (wechat, zhihu, aijishu follow lines)
    date: dt.date = field(default_factory=dt.date.today)


def check_answers(a: Answers) -> None:
    """A ConfigError naming the option for an answer publisher.toml cannot hold."""
    from publisher.channels.base import available_channels

    if not a.name.strip() or any(c in a.name for c in "\r\n\x00"):
        raise ConfigError("--name: the newsletter's name, on one line")
    if any(c in a.tagline for c in "\r\n\x00"):
        raise ConfigError("--tagline: one line")
    address_re = HEADER_KEYS[("email", "from_address")][0]
    if not address_re.fullmatch(a.sender):
        raise ConfigError(f"--sender {a.sender!r} is not an email address (like news@your-domain.org)")
    parts = urlsplit(a.site)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment \
            or re.search(r"\s", a.site):
        raise ConfigError(f"--site {a.site!r} is not the http(s):// address of your newsletter's web site")
    if a.license not in LICENSES:
        raise ConfigError(f"--license {a.license!r} is not one of: {', '.join(LICENSES)}")
    known = available_channels()
    unknown = [c for c in a.channels if c not in known]
    if unknown or not a.channels:
        raise ConfigError(f"--channels: unknown channel {', '.join(map(repr, unknown)) or '(none given)'}; "
                          f"available channels: {', '.join(known)}")


def _q(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string


def config_text(a: Answers) -> str:
    """publisher.toml for these answers: every identity key, commented."""
    site = a.site.rstrip("/")
    host = urlsplit(site).hostname or ""
    lic_name, lic_url, lic_badge = LICENSES[a.license]
    channels = ", ".join(_q(c) for c in a.channels)
    web = "web" in a.channels
    page = f"{site}/{{date}}.html" if web else ""
    lines = [
        f"# {a.name}: written by `publisher init`. Every key: see the README's Configuration section.",
        "# Relative paths are relative to this file. Secrets go in environment variables, never here.",
        "",
        "[newsletter]",
        f"name = {_q(a.name)}",
        f"tagline = {_q(a.tagline)}",
        f"account = {_q(a.account)}                  # WeChat account name (follow lines); empty = none",
        f"editor_url = {_q('')}",
        f"project_url = {_q(site + '/')}            # 往期回顾 links here",
        f"column = {_q('')}                          # Zhihu / aijishu column name",
        f"author = {_q(a.name)}",
        f"source = {_q(a.name)}",
        f"license_name = {_q(lic_name)}             # --license {a.license}",
        f"license_url = {_q(lic_url)}",
        f"license_badge = {_q(lic_badge)}",
        f"archive_url = {_q(page)}                   # an issue on the web, {{date}}",
        f"qr_public_url = {_q('')}                   # your account's QR image (public URL); empty = no QR",
        f"qr_image = {_q('')}                        # the same image as a file (WeChat uploads it)",
        f"image_base_url = {_q('')}                  # public base URL of issues' local images",
        "",
        "[channels]",
        f"enabled = [{channels}]",
        "",
        "[paths]",
        'issues = "issues"',
        'out = "build"',
        'ledger = "publisher.db"',
        "",
        "[email]",
        f"from_name = {_q(a.name)}",
        f"from_address = {_q(a.sender)}",
        f"list_id = {_q(host)}",
        f"view_url = {_q(page)}                      # \"view in browser\"; empty = no link",
        f"unsubscribe_url = {_q(site + '/unsubscribe?token={token}')}   # served by `publisher serve`",
        'subscribers_db = "subscribers.db"',
        "",
        "[subscribe]",
        f"url = {_q(site + '/subscribe')}",
        f"confirm_url = {_q(site + '/confirm?token={token}')}",
        "",
    ]
    if web:
        lines += ["[web]", f"base_url = {_q(site + '/')}", 'folder = "site"', ""]
    lines += ["# Sending email: add an [smtp] table (host, port, security, username; the password in",
              "# $PUBLISHER_SMTP_PASSWORD) — see the README's quick start.", ""]
    return "\n".join(re.sub(r'(") +#', r"\1  #", line) for line in lines)


def _sample(name: str) -> bytes:
    return resources.files("publisher.samples").joinpath(name).read_bytes()


def make_project(folder: Path, a: Answers) -> list[Path]:
    """Write the new newsletter's files into `folder`; return them. Refuses (ConfigError) before
    writing anything when publisher.toml or the sample issue is already there."""
    check_answers(a)
    folder = folder.resolve()
    config = folder / CONFIG_FILENAME
    issue = folder / "issues" / f"{a.date.isoformat()}.md"
    image = folder / "issues" / SAMPLE_IMAGE
    existing = [p for p in (config, issue, image) if p.exists()]
    if existing:
        raise ConfigError(f"{existing[0]} already exists: publisher init never overwrites; "
                          "pick an empty folder (publisher init DIR)")
    folder.mkdir(parents=True, exist_ok=True)
    text = config_text(a)
    issue_text = string.Template(_sample("issue.md").decode("utf-8")).substitute(
        name=a.name, tagline=a.tagline or a.name, date=a.date.isoformat())
    image.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(image, _sample(SAMPLE_IMAGE))
    atomic_write(issue, issue_text)
    atomic_write(config, text)
    written = [config, issue, image]
    ignore = folder / GITIGNORE
    wanted = _sample("gitignore.txt").decode("utf-8")
    if ignore.exists():
        have = set(ignore.read_text(encoding="utf-8", errors="replace").splitlines())
        missing = [line for line in wanted.splitlines() if line and not line.startswith("#") and line not in have]
        if missing:
            text = ignore.read_text(encoding="utf-8", errors="replace")
            atomic_write(ignore, text + ("" if text.endswith("\n") or not text else "\n")
                         + "# added by `publisher init`\n" + "\n".join(missing) + "\n")
            written.append(ignore)
    else:
        atomic_write(ignore, wanted)
        written.append(ignore)
    load_settings(config)  # what init writes always loads
    return written
