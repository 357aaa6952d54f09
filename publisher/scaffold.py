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

from .addresses import address_problem
from .atomic import atomic_write
from .errors import ConfigError
from .refs import is_http
from .settings import CONFIG_FILENAME, load_settings

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
    problem = address_problem(a.sender)
    if problem:
        raise ConfigError(f"--sender {a.sender!r} is not an email address (like news@your-domain.org): {problem}")
    parts = urlsplit(a.site)
    if not is_http(a.site) or not parts.hostname or parts.query or parts.fragment \
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
    """publisher.toml for these answers: every identity key, commented (samples/publisher.toml.jinja)."""
    import jinja2

    env = jinja2.Environment(autoescape=False, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters["q"] = _q
    site = a.site.rstrip("/")
    return env.from_string(_sample("publisher.toml.jinja").decode("utf-8")).render(
        a=a, site=site, host=urlsplit(site).hostname or "", license=LICENSES[a.license])


def _sample(name: str) -> bytes:
    return resources.files("publisher.samples").joinpath(name).read_bytes()


# The channels a new project starts with: the ones the sample's config template and issue are
# written for (samples/channels.txt, a name a line), so that no core module names a channel.
DEFAULT_CHANNELS = tuple(_sample("channels.txt").decode("utf-8").split())


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
