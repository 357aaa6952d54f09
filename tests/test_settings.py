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
