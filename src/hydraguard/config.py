"""Configuration: one TOML file, every value overridable by environment variables.

`HYDRAGUARD_CONFIG` names the file (default `hydraguard.toml`); `HYDRAGUARD_<SECTION>__<KEY>`
overrides one value, e.g. `HYDRAGUARD_SERVER__PORT=9000`. `hydraguard init` writes a commented
starter file with a fresh secret.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from hydraguard.limits.policy import LimitSet

DEFAULT_PATH = "hydraguard.toml"


class _Section(BaseModel):
    # a misspelt key is an error, not a silently ignored line (e.g. `rmp` leaving a limit unset)
    model_config = ConfigDict(extra="forbid")


class Limits(_Section):
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    tpd: int | None = Field(default=None, gt=0)
    concurrency: int | None = Field(default=None, gt=0)

    def to_set(self) -> LimitSet:
        return LimitSet(rpm=self.rpm, tpm=self.tpm, tpd=self.tpd, concurrency=self.concurrency)


ReasoningMode = Literal["raw", "summary", "sealed", "none"]
EntitledParameter = Literal["logprobs", "top_logprobs", "n", "max_tokens", "model", "temperature", "tools"]


class Entitlements(_Section):
    """What a tier's requests may ask for. Beyond it a parameter is clamped (rewritten into range before
    forwarding), or refused when it is listed in `refuse`. The defaults allow everything."""

    logprobs: bool = True
    max_top_logprobs: int | None = Field(default=None, ge=0, le=20)
    max_n: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, gt=0)
    models: list[str] = []  # allowed models; empty: any (clamping routes to the first)
    temperature_min: float | None = Field(default=None, ge=0, le=2)
    temperature_max: float | None = Field(default=None, ge=0, le=2)
    tools: bool = True
    reasoning: ReasoningMode = "raw"
    refuse: list[EntitledParameter] = []

    @model_validator(mode="after")
    def _ordered_bounds(self) -> Entitlements:
        low, high = self.temperature_min, self.temperature_max
        if low is not None and high is not None and low > high:
            raise ValueError(f"temperature_min {low} is above temperature_max {high}")
        return self


class Tier(_Section):
    account: Limits = Limits()
    key: Limits = Limits()
    org: Limits = Limits()
    entitlements: Entitlements = Entitlements()


def _default_tiers() -> dict[str, Tier]:
    return {
        "free": Tier(
            account=Limits(rpm=60, tpm=40_000, tpd=1_000_000, concurrency=4),
            org=Limits(rpm=120, tpm=80_000, tpd=2_000_000, concurrency=8),
        ),
        "standard": Tier(
            account=Limits(rpm=600, tpm=400_000, tpd=20_000_000, concurrency=32),
            org=Limits(rpm=3_000, tpm=2_000_000, tpd=100_000_000, concurrency=128),
        ),
        "enterprise": Tier(
            account=Limits(rpm=6_000, tpm=4_000_000, tpd=400_000_000, concurrency=256),
            org=Limits(rpm=30_000, tpm=20_000_000, tpd=2_000_000_000, concurrency=1_024),
        ),
    }


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    upstream: str = "http://127.0.0.1:8000/v1"
    upstream_api_key: str = ""  # sent to the upstream instead of the client's key, if it needs one
    upstream_connect_timeout: float = Field(default=5.0, gt=0)
    upstream_timeout: float = Field(default=600.0, gt=0)  # whole request, streams included
    secret: str = ""  # HMAC key for API-key hashes and personal-data fingerprints
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    max_header_bytes: int = Field(default=16 * 1024, gt=0)
    trusted_proxies: list[str] = []  # CIDRs whose X-Forwarded-For is believed
    default_max_tokens: int = Field(default=4_096, gt=0)  # reserved when a request sets none
    verification_url: str = "https://example.com/verify"

    @field_validator("upstream")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")


class RegistryConfig(_Section):
    url: str = "sqlite:///hydraguard-data/registry.db"


class BackendConfig(_Section):
    kind: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "hg:"
    redis_timeout: float = Field(default=0.25, gt=0)
    on_redis_error: Literal["open", "closed"] = "closed"
    decision_refresh_interval: float = Field(default=0.25, gt=0)
    memory_max_keys: int = Field(default=2_000_000, gt=0)


class EventsConfig(_Section):
    dir: str = "hydraguard-data/events"
    flush_interval: float = Field(default=1.0, gt=0)
    keep_prompt_text: bool = False
    prompt_text_max_chars: int = Field(default=2_000, gt=0)
    prompt_text_retention_days: float = Field(default=7.0, gt=0)


class LimitsConfig(_Section):
    ip: Limits = Limits(rpm=600, tpm=1_000_000, concurrency=64)
    subnet: Limits = Limits(rpm=3_000, tpm=5_000_000, concurrency=256)
    subnet_v4_prefix: int = Field(default=24, ge=8, le=32)
    subnet_v6_prefix: int = Field(default=48, ge=16, le=128)
    # a linked-account cluster shares one budget: by default, that of one free account
    group: Limits = Limits(rpm=60, tpm=40_000, tpd=1_000_000, concurrency=4)


class ReasoningConfig(_Section):
    summarizer_model: str = ""  # the model that writes summaries; "" = the request's own model
    summary_max_tokens: int = Field(default=256, gt=0)
    summary_max_input_chars: int = Field(default=16_000, gt=0)  # longer traces are cut before summarizing
    summary_timeout: float = Field(default=30.0, gt=0)  # seconds; past it the trace is stripped instead
    summary_prompt: str = (
        "Summarize the following reasoning in at most three sentences. Give its conclusion and main "
        "considerations, not its individual steps."
    )
    # seal keys by id, derived from server.secret: the last one seals, the others still open until removed
    seal_keys: list[str] = Field(default=["k1"], min_length=1)
    seal_ttl: float = Field(default=86_400.0, gt=0)  # seconds a reasoning signature can be sent back

    @field_validator("seal_keys")
    @classmethod
    def _plain_key_ids(cls, ids: list[str]) -> list[str]:
        for key_id in ids:
            if not key_id or not all(c.isascii() and (c.isalnum() or c in "-_") for c in key_id):
                raise ValueError(f"seal key id {key_id!r} must be letters, digits, '-' or '_'")
        if len(set(ids)) != len(ids):
            raise ValueError("seal key ids must be distinct")
        return ids


class DegradeProfile(_Section):
    model: str = ""  # route to this model; "" keeps the requested one
    max_tokens: int | None = Field(default=None, gt=0)
    reasoning_effort: str | None = None  # cap, e.g. "low"
    reasoning: ReasoningMode | None = "none"  # overrides the tier's reasoning mode; None keeps it
    drop_logprobs: bool = True


def _default_degrade_profiles() -> dict[str, DegradeProfile]:
    return {"default": DegradeProfile(max_tokens=1_024, reasoning_effort="low")}


class DegradeConfig(_Section):
    default_profile: str = "default"  # for decisions that name no profile, or one not configured
    profiles: dict[str, DegradeProfile] = Field(default_factory=_default_degrade_profiles)

    @model_validator(mode="after")
    def _default_exists(self) -> DegradeConfig:
        if self.default_profile not in self.profiles:
            raise ValueError(f"degrade.default_profile {self.default_profile!r} is not in degrade.profiles")
        return self


class LoggingConfig(_Section):
    level: str = "INFO"
    json_format: bool = True


class AdminConfig(_Section):
    # its own port, on loopback by default: the admin API is not part of the public gateway
    host: str = "127.0.0.1"
    port: int = Field(default=8081, ge=0, le=65535)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HYDRAGUARD_", env_nested_delimiter="__", extra="forbid")
    toml_path: ClassVar[str] = DEFAULT_PATH

    server: ServerConfig = ServerConfig()
    registry: RegistryConfig = RegistryConfig()
    backend: BackendConfig = BackendConfig()
    events: EventsConfig = EventsConfig()
    limits: LimitsConfig = LimitsConfig()
    tiers: dict[str, Tier] = Field(default_factory=_default_tiers)
    reasoning: ReasoningConfig = ReasoningConfig()
    degrade: DegradeConfig = DegradeConfig()
    logging: LoggingConfig = LoggingConfig()
    admin: AdminConfig = AdminConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = Path(settings_cls.toml_path)  # type: ignore[attr-defined]
        if path.is_file():
            return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=path))
        # without a file, an environment override changes one value of the built-in defaults, not a whole section
        return (init_settings, env_settings, InitSettingsSource(settings_cls, init_kwargs=_builtin_defaults()))

    def secret_bytes(self) -> bytes:
        if not self.server.secret:
            raise ConfigError("no server secret: run `hydraguard init` or set HYDRAGUARD_SERVER__SECRET")
        return self.server.secret.encode()


def _builtin_defaults() -> dict[str, object]:
    return {
        name: TypeAdapter(field.annotation).dump_python(field.get_default(call_default_factory=True))
        for name, field in Settings.model_fields.items()
    }


class ConfigError(Exception):
    pass


def load(path: str | os.PathLike[str] | None = None) -> Settings:
    """Settings from `path` (or $HYDRAGUARD_CONFIG, or ./hydraguard.toml if present) plus the environment."""
    chosen = str(path) if path is not None else os.environ.get("HYDRAGUARD_CONFIG")
    if chosen is not None and not Path(chosen).is_file():
        raise ConfigError(f"config file {chosen} does not exist (create one with `hydraguard init`)")

    class FromFile(Settings):
        toml_path: ClassVar[str] = chosen or DEFAULT_PATH

    try:
        return FromFile()
    except ValueError as exc:  # pydantic's ValidationError, tomllib's TOMLDecodeError
        raise ConfigError(f"invalid configuration: {exc}") from exc


STARTER = Path(__file__).with_name("starter.toml")


def write_starter(path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    if target.exists():
        raise ConfigError(f"{target} exists; not overwriting it")
    text = STARTER.read_text().replace("@SECRET@", secrets.token_urlsafe(32))
    target.write_text(text)
    target.chmod(0o600)
    return target
