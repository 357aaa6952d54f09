"""Configuration: defaults, overrides, validation that names the file and the key."""

from __future__ import annotations

import pytest

from publisher.errors import ConfigError
from publisher.settings import load_settings


def write(tmp_path, text):
    path = tmp_path / "publisher.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file(tmp_path):
    s = load_settings(cwd=tmp_path)
    assert s.file is None
    assert s["newsletter"]["name"] == "嵌入式AI简报"
    assert s.path("paths", "issues") == tmp_path / "issues"
    assert s.enabled_channels == ["github", "wechat", "email", "zhihu", "aijishu", "plaintext"]


def test_project_file_overrides_and_resolves_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    path = write(tmp_path / "sub", '[newsletter]\nname = "My Letter"\n[paths]\nissues = "src"\n')
    s = load_settings(path, cwd=tmp_path)
    assert s["newsletter"]["name"] == "My Letter"
    assert s.path("paths", "issues") == tmp_path / "sub" / "src"
    assert s.path("paths", "ledger") == tmp_path / "sub" / "publisher.db"  # default follows the file


@pytest.mark.parametrize(
    "text, needle",
    [
        ('[emial]\nx = 1\n', "unknown table [emial]"),
        ('[smtp]\nprot = 25\n', "unknown key [smtp] prot"),
        ('[smtp]\nport = "25"\n', "[smtp] port must be an integer"),
        ('[channels]\nenabled = "github"\n', "[channels] enabled must be a list"),
        ('[smtp\nport = 25\n', "invalid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, cwd=tmp_path)
    assert needle in str(info.value) and str(path) in str(info.value)


def test_require_and_secret_name_where_to_fix(tmp_path, monkeypatch):
    s = load_settings(write(tmp_path, "[wechat]\napp_id = \"\"\n"), cwd=tmp_path)
    with pytest.raises(ConfigError) as info:
        s.require("wechat", "app_id")
    assert "[wechat] app_id is not set" in str(info.value) and "publisher.toml" in str(info.value)
    monkeypatch.delenv("PUBLISHER_SMTP_PASSWORD", raising=False)
    with pytest.raises(ConfigError) as info:
        s.secret("smtp", "password_env")
    assert "PUBLISHER_SMTP_PASSWORD" in str(info.value)
    monkeypatch.setenv("PUBLISHER_SMTP_PASSWORD", "hunter2")
    assert s.secret("smtp", "password_env") == "hunter2"


# ---- a channel's keys are declared by its class, not named by the core ----------------------

EMAIL_KEYS = ("ambiguous, from_address, from_name, list_id, postal_address, reply_to, secret_env, "
              "subject_template, subscribers_db, transport, unsubscribe_mailto, unsubscribe_url, view_url")


@pytest.mark.parametrize(
    "text, needle",
    [
        ('[email]\nx = 1\n', f"unknown key [email] x; keys of [email]: {EMAIL_KEYS}"),
        ('[email]\nsubscribers_db = 3\n', "[email] subscribers_db must be a string, got 3"),
        ('[github]\npush = "yes"\n', "[github] push must be a boolean (true/false), got 'yes'"),
        ('[wechat]\npublish_settle_hours = "1"\n', "[wechat] publish_settle_hours must be a number, got '1'"),
        ('[email]\nfrom_address = "ed@ex..org"\n',
         "[email] from_address must be an address like newsletter@example.org, got 'ed@ex..org'"),
        ('[email]\nreply_to = "nobody"\n', "[email] reply_to must be an address like editor@example.org"),
        ('[email]\nlist_id = "nodot"\n',
         "[email] list_id must be a list id like embedded-ai-report.example.org (RFC 2919), got 'nodot'"),
        ('[email]\nunsubscribe_mailto = "x@"\n', "[email] unsubscribe_mailto must be an address like unsubscribe@"),
        ('[email]\nfrom_name = "Ed\\r\\nBcc: all@example.org"\n', "[email] from_name must be a name on one line"),
        ('[email]\nsubject_template = "{title}\\nBcc: x"\n', "[email] subject_template must be a subject on one line"),
        ('[email]\nunsubscribe_url = "https://example.org/u"\n',
         "[email] unsubscribe_url must be an http(s) URL with {token}, got 'https://example.org/u'"),
    ],
)
def test_a_channels_keys_keep_their_messages(tmp_path, text, needle):
    """The built-in channels' tables, declared in their `config` now, are checked as before: the
    same messages naming the file and the key (even when the channel is not enabled)."""
    for enabled in ('', '[channels]\nenabled = ["plaintext"]\n'):
        path = write(tmp_path, enabled + text)
        with pytest.raises(ConfigError) as info:
            load_settings(path, cwd=tmp_path)
        assert needle in str(info.value) and str(path) in str(info.value)


def test_the_built_in_channels_path_keys_follow_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    path = write(tmp_path / "sub", '[channels]\nenabled = ["plaintext"]\n'
                 '[github]\nrepo_path = "../archive"\n[wechat]\ndefault_cover = "cover.png"\n')
    s = load_settings(path, cwd=tmp_path)
    assert s.path("github", "repo_path") == tmp_path / "archive"
    assert s.path("wechat", "default_cover") == tmp_path / "sub" / "cover.png"
    # the mailing channel's table is there although email is not enabled: its default path follows the file
    assert s.path("email", "subscribers_db") == tmp_path / "sub" / "subscribers.db"
    # every installed channel's table is, enabled or not (`push --channel github` reads [github])
    s = load_settings(write(tmp_path / "sub", '[channels]\nenabled = ["plaintext"]\n'), cwd=tmp_path)
    assert s["github"]["remote"] == "origin" and s["wechat"]["theme"] == "default" and s["web"]["folder"] == "site"
    assert s.path("github", "repo_path") is None and s["email"]["from_address"]
    assert load_settings(cwd=tmp_path).path("email", "subscribers_db") == tmp_path / "subscribers.db"


RELAY_CONFIG = '''
[relay]
outbox = "relay-out"          # a path: resolved against the config file's folder
sender = "relay@example.org"  # reaches a header
handle = "@example_relay"     # the newsletter's identity there
retries = 3
'''


@pytest.fixture
def relay(monkeypatch):
    """A third-party channel ('relay') installed beside the built-in ones, declaring its own path,
    header and identity keys."""
    from publisher.channels.plaintext import PlainTextChannel

    from publisher import registry
    from publisher import settings as settings_module

    class Relay(PlainTextChannel):
        name = "relay"
        config = RELAY_CONFIG
        path_keys = ("outbox",)
        header_keys = {"sender": (lambda v: v.endswith(".org"), "an address at a .org domain")}
        identity_keys = ("handle",)

    class EntryPoint:
        name, value, dist = "relay", "relay:Relay", None

        def load(self):
            return Relay

    real = registry._entry_points()
    monkeypatch.setattr(registry, "_entry_points", lambda: {**real, "relay": EntryPoint()})
    def clear():
        registry.mail_channel.cache_clear()
        getattr(settings_module.shipped_examples, "cache_clear", lambda: None)()  # the neutral one is cached

    clear()
    yield Relay
    clear()


def test_a_third_party_channels_path_key_follows_the_config_file(relay, tmp_path):
    (tmp_path / "sub").mkdir()
    enabled = '[channels]\nenabled = ["relay"]\n'
    s = load_settings(write(tmp_path / "sub", enabled), cwd=tmp_path)
    assert s.path("relay", "outbox") == tmp_path / "sub" / "relay-out"  # its default, beside the file
    s = load_settings(write(tmp_path / "sub", enabled + '[relay]\noutbox = "../out"\n'), cwd=tmp_path)
    assert s.path("relay", "outbox") == tmp_path / "out"
    assert s["relay"]["retries"] == 3 and s["relay"]["sender"] == "relay@example.org"
    s = load_settings(write(tmp_path / "sub", '[relay]\noutbox = "x"\n'), cwd=tmp_path)  # set, not enabled
    assert s.path("relay", "outbox") == tmp_path / "sub" / "x"


@pytest.mark.parametrize("value, bad", [("ops@relay.org", False), ("ops@relay.com", True),
                                        ("ops@relay.org\\r\\nBcc: all@relay.org", True)])
def test_a_third_party_channels_header_key_is_checked_at_load(relay, tmp_path, value, bad):
    path = write(tmp_path, f'[channels]\nenabled = ["relay"]\n[relay]\nsender = "{value}"\n')
    if not bad:
        assert load_settings(path, cwd=tmp_path)["relay"]["sender"] == "ops@relay.org"
        return
    with pytest.raises(ConfigError) as info:
        load_settings(path, cwd=tmp_path)
    assert f"{path}: [relay] sender must be an address at a .org domain, got " in str(info.value)


def test_a_third_party_channels_unknown_key_is_named_with_its_keys(relay, tmp_path):
    path = write(tmp_path, '[channels]\nenabled = ["relay"]\n[relay]\nsendr = "x"\n')
    with pytest.raises(ConfigError, match=r"unknown key \[relay\] sendr; keys of \[relay\]: handle, outbox, "
                       r"retries, sender"):
        load_settings(path, cwd=tmp_path)


@pytest.mark.neutral
def test_a_third_party_channels_identity_key_refuses_its_shipped_example(relay, tmp_path):
    from publisher.settings import shipped_examples

    assert shipped_examples()[("relay", "handle")] == {"@example_relay"}
    s = load_settings(write(tmp_path, '[channels]\nenabled = ["relay"]\n'), cwd=tmp_path)
    with pytest.raises(ConfigError, match=r"\[relay\] handle is still the shipped example '@example_relay'"):
        s.require_own("relay", "handle", "readers follow it")
    s = load_settings(write(tmp_path, '[channels]\nenabled = ["relay"]\n[relay]\nhandle = "@mine"\n'), cwd=tmp_path)
    assert s.require_own("relay", "handle", "readers follow it") == "@mine"


def test_a_channel_declaring_a_key_its_table_lacks_is_named(relay, monkeypatch, tmp_path):
    cases = [("path_keys", ("outbx",), "that its config table [relay] does not have"),
             ("header_keys", {"sendr": (None, "x")}, "that its config table [relay] does not have"),
             ("header_keys", {"retries": (None, "x")}, "whose default in [relay] is not a string"),
             ("path_keys", ("retries",), "whose default in [relay] is not a string")]
    for kind, value, words in cases:
        with monkeypatch.context() as m:
            m.setattr(relay, kind, value)
            with pytest.raises(ConfigError) as info:
                load_settings(write(tmp_path, '[relay]\nsender = "a@b.org"\n'), cwd=tmp_path)
            assert f"channel 'relay' declares {kind} {list(value)[0]} {words}" in str(info.value)
