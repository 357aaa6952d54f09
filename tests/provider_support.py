"""A project configured for an email provider pointing at a fake provider server, subscribers,
the email rendition, and the child process of the kill trials."""

from __future__ import annotations

from pathlib import Path

from publisher import pipeline
from publisher.settings import load_settings
from publisher.subscribers import open_db
from tests import provider_servers as ps
from tests.email_support import ISSUE, SECRET

WEBHOOK_PASSWORD = "pm-hook-pw"
MG_SIGNING_KEY = "mg-signing-key-for-tests"


def write_project(folder: Path, provider: str, base: str, *, batch_size: int | None = None, concurrency: int = 2,
                  ambiguous: str = "resend", max_retries: int = 3, topic: str = "", extra: str = "",
                  reconcile_delay: float = 0, database_url: str = "", timeout: float = 3) -> Path:
    """`timeout`: the fake servers answer on loopback in milliseconds; it also bounds how long a
    reconciliation waits (a call is searched for once it is timeout + reconcile_delay old)."""
    folder.mkdir(parents=True, exist_ok=True)
    tables = {
        "ses": f'[ses]\nregion = "{ps.AWS_REGION}"\napi_base = "{base}"\nconcurrency = {concurrency}\n'
               f'rate_per_second = 0\nmax_retries = {max_retries}\ntimeout = 10\n'
               f'topic_arns = ["{topic}"]\n' if topic or provider == "ses" else "",
        "postmark": f'[postmark]\napi_base = "{base}"\nconcurrency = {concurrency}\n'
                    f'reconcile_delay = {reconcile_delay}\n'
                    f'max_retries = {max_retries}\ntimeout = {timeout}\nwebhook_user = "postmark"\n'
                    + (f"batch_size = {batch_size}\n" if batch_size else ""),
        "mailgun": f'[mailgun]\napi_base = "{base}"\ndomain = "{ps.MG_DOMAIN}"\nconcurrency = {concurrency}\n'
                   f'reconcile_delay = {reconcile_delay}\nmax_retries = {max_retries}\ntimeout = {timeout}\n'
                   + (f"batch_size = {batch_size}\n" if batch_size and provider == "mailgun" else ""),
    }
    cfg = folder / "publisher.toml"
    cfg.write_text(f"""
[paths]
issues = "issues"
ledger = "publisher.db"

[email]
from_address = "news@example.org"
list_id = "embedded-ai.example.org"
unsubscribe_url = "https://news.example.org/unsubscribe?token={{token}}&src=email"
unsubscribe_mailto = "unsubscribe@example.org"
subscribers_db = "subscribers.db"
transport = "{provider}"
ambiguous = "{ambiguous}"

[database]
url = "{database_url}"

[newsletter]
image_base_url = "https://news.example.org/{{date}}"

[subscribe]
url = "https://news.example.org/subscribe"
confirm_url = "https://news.example.org/confirm?token={{token}}"

{tables['ses']}
{tables['postmark']}
{tables['mailgun']}
{extra}
""", encoding="utf-8")
    return cfg


def provider_env(monkeypatch) -> None:
    monkeypatch.setenv("PUBLISHER_UNSUBSCRIBE_SECRET", SECRET)
    monkeypatch.setenv("PUBLISHER_POSTMARK_TOKEN", ps.TOKEN)
    monkeypatch.setenv("PUBLISHER_MAILGUN_API_KEY", ps.MG_KEY)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ps.AWS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ps.AWS_SECRET)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("PUBLISHER_POSTMARK_WEBHOOK_PASSWORD", WEBHOOK_PASSWORD)
    monkeypatch.setenv("PUBLISHER_MAILGUN_WEBHOOK_KEY", MG_SIGNING_KEY)
    monkeypatch.delenv("PUBLISHER_CONFIG", raising=False)


def add_subscribers(settings, n: int, domain: str = "example.com") -> list[str]:
    db = open_db(settings)
    emails = [f"reader{i:05d}@{domain}" for i in range(n)]
    db.add_many([(e, f"读者 {i}", "") for i, e in enumerate(emails)])
    return emails


def rendition(settings):
    issue, _ = pipeline.load(ISSUE)
    return pipeline.render(issue, "email", settings)


def settings_for(folder: Path, provider: str, base: str, **kw):
    return load_settings(write_project(folder, provider, base, **kw))


CHILD = """
import json, sys
from publisher.channels.base import Rendition
from publisher.stores import open_ledger
from publisher.settings import load_settings
from publisher.transports.providers.campaign import ProviderCampaign
settings = load_settings(sys.argv[1])
rendition = Rendition(**json.loads(open(sys.argv[2], encoding="utf-8").read()))
stats = ProviderCampaign(rendition, settings, open_ledger(settings),
                         secret=settings.secret("email", "secret_env")).run()
print(json.dumps(stats.as_details()))
"""
