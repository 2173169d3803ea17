"""Configuration: defaults, the TOML file, environment overrides, validation, the starter file."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import pytest

from hydraguard import config
from hydraguard.config import ConfigError, Settings, load, write_starter
from hydraguard.limits.policy import LimitSet


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("HYDRAGUARD_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no ./hydraguard.toml unless a test writes one


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_without_a_file():
    settings = load()
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8080
    assert settings.server.secret == ""
    assert settings.backend.kind == "memory"
    assert settings.events.keep_prompt_text is False
    assert settings.registry.url.startswith("sqlite:///")
    assert set(settings.tiers) == {"free", "standard", "enterprise"}
    assert settings.tiers["free"].account.to_set() == LimitSet(rpm=60, tpm=40_000, tpd=1_000_000, concurrency=4)
    assert settings.limits.ip.rpm == 600


def test_a_toml_file_is_read(tmp_path):
    path = write(
        tmp_path / "custom.toml",
        """
        [server]
        port = 9100
        upstream = "http://10.0.0.5:8000/v1/"
        secret = "file-secret"
        trusted_proxies = ["10.0.0.0/8"]

        [backend]
        kind = "redis"
        redis_url = "redis://10.0.0.6:6379/1"

        [events]
        flush_interval = 0.5
        keep_prompt_text = true

        [tiers.gold.account]
        rpm = 7
        """.replace("\n        ", "\n"),
    )
    settings = load(path)
    assert settings.server.port == 9100
    assert settings.server.upstream == "http://10.0.0.5:8000/v1"  # trailing slash stripped
    assert settings.server.trusted_proxies == ["10.0.0.0/8"]
    assert settings.server.host == "127.0.0.1"  # not in the file: default
    assert settings.backend.kind == "redis" and settings.backend.redis_url == "redis://10.0.0.6:6379/1"
    assert settings.events.flush_interval == 0.5 and settings.events.keep_prompt_text is True
    assert settings.secret_bytes() == b"file-secret"
    # a file's [tiers] replaces the built-in tiers; omitted limits are unlimited
    assert set(settings.tiers) == {"gold"}
    assert settings.tiers["gold"].account.to_set() == LimitSet(rpm=7)
    assert settings.tiers["gold"].org.to_set() == LimitSet()


def test_default_file_in_cwd_and_hydraguard_config_env(tmp_path, monkeypatch):
    write(tmp_path / "hydraguard.toml", "[server]\nport = 9200\n")
    assert load().server.port == 9200
    other = write(tmp_path / "other.toml", "[server]\nport = 9300\n")
    monkeypatch.setenv("HYDRAGUARD_CONFIG", str(other))
    assert load().server.port == 9300
    assert load(tmp_path / "hydraguard.toml").server.port == 9200  # an explicit path wins


def test_environment_overrides_win_over_the_file(tmp_path, monkeypatch):
    path = write(
        tmp_path / "c.toml",
        """[server]
port = 9100
host = "0.0.0.0"
secret = "file-secret"

[backend]
kind = "memory"

[events]
dir = "/var/lib/hg/events"

[tiers.free.account]
rpm = 60
tpm = 40000
""",
    )
    monkeypatch.setenv("HYDRAGUARD_SERVER__PORT", "9999")
    monkeypatch.setenv("HYDRAGUARD_SERVER__SECRET", "env-secret")
    monkeypatch.setenv("HYDRAGUARD_BACKEND__KIND", "redis")
    monkeypatch.setenv("HYDRAGUARD_SERVER__TRUSTED_PROXIES", '["192.0.2.0/24"]')
    monkeypatch.setenv("HYDRAGUARD_TIERS__FREE__ACCOUNT__RPM", "5")
    settings = load(path)
    assert settings.server.port == 9999
    assert settings.secret_bytes() == b"env-secret"
    assert settings.backend.kind == "redis"
    assert settings.server.trusted_proxies == ["192.0.2.0/24"]
    # values the environment does not set still come from the file
    assert settings.server.host == "0.0.0.0"
    assert settings.events.dir == "/var/lib/hg/events"
    assert settings.tiers["free"].account.to_set() == LimitSet(rpm=5, tpm=40_000)


def test_environment_override_without_a_file(monkeypatch):
    monkeypatch.setenv("HYDRAGUARD_SERVER__PORT", "7000")
    monkeypatch.setenv("HYDRAGUARD_EVENTS__KEEP_PROMPT_TEXT", "true")
    settings = load()
    assert settings.server.port == 7000
    assert settings.events.keep_prompt_text is True
    assert settings.server.host == "127.0.0.1"


def test_missing_named_file_is_a_config_error(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "absent.toml")
    monkeypatch.setenv("HYDRAGUARD_CONFIG", str(tmp_path / "absent-too.toml"))
    with pytest.raises(ConfigError, match=r"absent-too\.toml"):
        load()


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[server]\nport = -1\n", "server.port"),
        ("[server]\nport = 70000\n", "server.port"),
        ('[backend]\nkind = "etcd"\n', "backend.kind"),
        ("[bogus]\nx = 1\n", "bogus"),
        ("[events]\nflush_interval = 0\n", "events.flush_interval"),
        ("[server]\nhots = 'typo'\n", "server.hots"),
        ("[tiers.free.account]\nrpm = 0\n", "tiers.free.account.rpm"),
        ('[server]\nport = "many"\n', "server.port"),
        ("[limits.ip]\nrmp = 10\ntpm = 1000\n", "limits.ip.rmp"),  # a typo must not leave rpm unlimited
        ("[events]\nkeep_prompt_txt = false\n", "events.keep_prompt_txt"),
        ('[server]\ntls_fingerprint_header = "cf ja4"\n', "server.tls_fingerprint_header"),
        ('[server]\ntls_fingerprint_header = "Authorization"\n', "server.tls_fingerprint_header"),
    ],
)
def test_invalid_values_raise_a_clear_error(tmp_path, text, where):
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as excinfo:
        load(path)
    assert where in str(excinfo.value)
    assert str(excinfo.value).startswith("invalid configuration")


def test_invalid_environment_value_raises(monkeypatch):
    monkeypatch.setenv("HYDRAGUARD_SERVER__PORT", "-5")
    with pytest.raises(ConfigError, match=r"server\.port"):
        load()
    monkeypatch.setenv("HYDRAGUARD_SERVER__PORT", "80")
    monkeypatch.setenv("HYDRAGUARD_SERVER__PROT", "81")
    with pytest.raises(ConfigError, match=r"server\.prot"):
        load()
    monkeypatch.delenv("HYDRAGUARD_SERVER__PROT")
    monkeypatch.setenv("HYDRAGUARD_BACKEND__KIND", "sqlite")
    with pytest.raises(ConfigError, match=r"backend\.kind"):
        load()


def test_malformed_toml_raises_config_error(tmp_path):
    path = write(tmp_path / "broken.toml", "[server\nport = 1\n")
    with pytest.raises(ConfigError, match="invalid configuration"):
        load(path)


def test_starter_file_loads_with_the_three_tiers(tmp_path):
    path = write_starter(tmp_path / "starter.toml")
    assert path == tmp_path / "starter.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "@SECRET@" not in path.read_text()
    settings = load(path)
    assert set(settings.tiers) == {"free", "standard", "enterprise"}
    assert len(settings.secret_bytes()) >= 32
    # the starter spells out the built-in defaults
    defaults = Settings()
    for name in ("free", "standard", "enterprise"):
        assert settings.tiers[name] == defaults.tiers[name]
    for section in ("server", "backend", "events", "limits", "logging", "registry", "detect"):
        ours = getattr(settings, section).model_dump()
        base = getattr(defaults, section).model_dump()
        if section == "server":
            ours.pop("secret"), base.pop("secret")
        assert ours == base, section
    # every key of the starter is a known setting (the file is parsed with extra="forbid")
    assert set(tomllib.loads(path.read_text())) <= set(Settings.model_fields)


def test_write_starter_refuses_to_overwrite_and_secrets_differ(tmp_path):
    a = write_starter(tmp_path / "a.toml")
    b = write_starter(tmp_path / "b.toml")
    assert load(a).server.secret != load(b).server.secret
    before = a.read_text()
    with pytest.raises(ConfigError, match="not overwriting"):
        write_starter(a)
    assert a.read_text() == before


def test_secret_bytes_without_secret_raises():
    settings = load()
    with pytest.raises(ConfigError, match="no server secret"):
        settings.secret_bytes()
    assert Settings(server={"secret": "abc"}).secret_bytes() == b"abc"


def test_starter_template_has_the_secret_placeholder():
    assert "@SECRET@" in config.STARTER.read_text()
