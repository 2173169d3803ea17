"""Configuration: one TOML file, every value overridable by environment variables.

`HYDRAGUARD_CONFIG` names the file (default `hydraguard.toml`); `HYDRAGUARD_<SECTION>__<KEY>`
overrides one value, e.g. `HYDRAGUARD_SERVER__PORT=9000`. `hydraguard init` writes a commented
starter file with a fresh secret.
"""

from __future__ import annotations

import os
import re
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


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
_CREDENTIAL_HEADERS = frozenset(("authorization", "proxy-authorization", "cookie"))


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    upstream: str = "http://127.0.0.1:8000/v1"
    upstream_api_key: str = ""  # sent to the upstream instead of the client's key, if it needs one
    upstream_connect_timeout: float = Field(default=5.0, gt=0)
    upstream_timeout: float = Field(default=600.0, gt=0)  # whole request, streams included
    # how long an idle upstream connection is kept for reuse: under the upstream's own idle timeout (5 s in uvicorn,
    # which vLLM runs on, and in llama.cpp's server), or a request can go out on a connection being closed (a 502)
    upstream_keepalive: float = Field(default=2.0, gt=0)
    secret: str = ""  # HMAC key for API-key hashes and personal-data fingerprints
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    max_header_bytes: int = Field(default=16 * 1024, gt=0)
    trusted_proxies: list[str] = []  # CIDRs whose X-Forwarded-For is believed
    # the header in which the TLS-terminating edge passes the client's TLS fingerprint (JA4, JA3, ...), believed
    # from `trusted_proxies` only; "" = none recorded
    tls_fingerprint_header: str = ""
    default_max_tokens: int = Field(default=4_096, gt=0)  # reserved when a request sets none
    verification_url: str = "https://example.com/verify"

    @field_validator("upstream")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("tls_fingerprint_header")
    @classmethod
    def _header_name(cls, name: str) -> str:
        if name and not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not an HTTP header name")
        if name.lower() in _CREDENTIAL_HEADERS:
            raise ValueError(f"{name!r} carries credentials; it must not be recorded")
        return name.lower()  # as ASGI servers deliver header names


class RegistryConfig(_Section):
    url: str = "sqlite:///hydraguard-data/registry.db"
    auto_upgrade: bool = True  # false: refuse to start while the schema is behind; run `hydraguard db upgrade`


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


class DetectConfig(_Section):
    """Streaming detection (`hydraguard detect --follow`, or in the background of `hydraguard serve`)."""

    in_serve: bool = False  # `hydraguard serve` also runs the detection worker, as a supervised child process
    poll_interval: float = Field(default=5.0, ge=0.1)  # seconds between reads of the event log
    analysis_interval: float = Field(default=3_600.0, ge=1)  # seconds of event time between account-rule analyses
    linkage_interval: float = Field(default=21_600.0, ge=1)  # ... between linkages (cluster rules)
    # ... between linkages in batch analysis (`hydraguard analyze`): a finished log is linked daily, four times
    # faster than every 6 h, at the cost measured in docs/detection.md ("Speed")
    batch_linkage_interval: float = Field(default=86_400.0, ge=1)
    # ... and the event time from a batch linkage's graph to its clusters (at most half the interval): Leiden runs on
    # a second core while that much of the log is folded in, so the cluster rules run that much later
    # (docs/detection.md, "Speed")
    batch_linkage_lag: float = Field(default=43_200.0, ge=0)
    # a crashed background worker is restarted after this many seconds, doubled after each crash up to the maximum
    restart_backoff: float = Field(default=1.0, gt=0)
    restart_max_backoff: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _ordered_intervals(self) -> DetectConfig:
        for name in ("linkage_interval", "batch_linkage_interval"):
            if getattr(self, name) < self.analysis_interval:
                raise ValueError(f"detect.{name} must be at least detect.analysis_interval")
        if self.restart_max_backoff < self.restart_backoff:
            raise ValueError("detect.restart_max_backoff must be at least detect.restart_backoff")
        return self


IndicatorKindName = Literal[
    "ip", "asn", "email_domain", "payment_fingerprint", "user_agent", "key_fingerprint", "template_signature"
]


class TaxiiFeed(_Section):
    """A TAXII 2.1 collection polled for indicators (`hydraguard intel poll --follow`)."""

    api_root: str
    collection: str
    user: str = ""
    password_env: str = ""  # the environment variable that holds the password (never the file)
    interval: float = Field(default=3_600.0, ge=60)  # seconds between polls


class IntelConfig(_Section):
    asn_table: str = ""  # CSV of `cidr,asn` rows; ASN indicators match only with one
    refresh_interval: float = Field(default=5.0, gt=0)  # seconds between checks for a changed indicator set
    max_feed_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    max_feed_indicators: int = Field(default=1_000_000, gt=0)
    # a match only records `intel_matches` unless its kind is listed here and its confidence reaches the minimum
    block_on_match: list[IndicatorKindName] = []
    block_min_confidence: int = Field(default=0, ge=0, le=100)
    feeds: list[TaxiiFeed] = []
    # the TAXII collection of campaigns the admin API serves: confirmed ones, and with `export_open` open ones
    # scoring at least `export_open_min_score`
    export_open: bool = False
    export_open_min_score: float = Field(default=0.8, ge=0)
    producer: str = Field(default="hydraguard", min_length=1)  # the Identity named in exported bundles


class Webhook(_Section):
    url: str = Field(pattern=r"^https?://")
    kind: Literal["json", "slack"] = "json"


class AlertsConfig(_Section):
    webhooks: list[Webhook] = []
    secret_env: str = "HYDRAGUARD_ALERT_SECRET"  # the environment variable holding the HMAC signing key
    min_score: float = Field(default=0.0, ge=0)  # campaigns scoring less raise no alert
    update_interval: float = Field(default=900.0, ge=0)  # seconds between two alerts about one campaign
    max_per_hour: int = Field(default=30, gt=0)  # alerts per webhook per hour, all campaigns together
    attempts: int = Field(default=5, ge=1, le=20)  # deliveries tried, with exponential backoff between them
    backoff: float = Field(default=1.0, gt=0)  # seconds before the first retry; doubled each time
    timeout: float = Field(default=10.0, gt=0)


VerificationLevel = Literal["email", "phone", "payment_method", "identity", "organization"]
AccountType = Literal["individual", "startup", "education", "research", "enterprise"]


class AccountTypeRule(_Section):
    required: list[VerificationLevel] = []  # below these, the account stays on verification.base_tier
    before_first_use: bool = False  # a new account is challenged until it holds `required`


def _default_account_types() -> dict[AccountType, AccountTypeRule]:
    # the program pathways are where fraudulent accounts came in: verified harder, before first use
    program = ["email", "phone", "identity", "organization"]
    return {
        "individual": AccountTypeRule(required=["email"]),
        "startup": AccountTypeRule(
            required=["email", "phone", "payment_method", "organization"], before_first_use=True
        ),
        "education": AccountTypeRule(required=program, before_first_use=True),
        "research": AccountTypeRule(required=program, before_first_use=True),
        "enterprise": AccountTypeRule(required=["email", "payment_method", "organization"]),
    }


class TierRule(_Section):
    """An account gets the first rule's tier whose every condition holds."""

    tier: str
    account_types: list[AccountType] = []  # empty: any type
    levels: list[VerificationLevel] = []
    min_age_days: float = Field(default=0.0, ge=0)
    min_payments: int = Field(default=0, ge=0)  # succeeded payments
    max_failed_payments: int | None = Field(default=None, ge=0)
    max_chargebacks: int = Field(default=0, ge=0)
    max_decisions: int = Field(default=0, ge=0)  # standing: decisions in force against the account or its groups


def _default_tier_rules() -> list[TierRule]:
    return [
        TierRule(
            tier="enterprise",
            account_types=["enterprise"],
            levels=["email", "payment_method", "organization"],
            min_payments=1,
        ),
        TierRule(tier="standard", levels=["email", "payment_method"], min_age_days=7, min_payments=1),
    ]


class RiskWeights(_Section):
    disposable_email: int = Field(default=40, ge=0)
    email_burst: int = Field(default=30, ge=0)
    ip_velocity: int = Field(default=25, ge=0)
    subnet_velocity: int = Field(default=15, ge=0)
    device_velocity: int = Field(default=30, ge=0)
    payment_velocity: int = Field(default=30, ge=0)
    payment_shared: int = Field(default=40, ge=0)
    threat_intel: int = Field(default=60, ge=0)
    unsupported_region: int = Field(default=100, ge=0)


class RiskConfig(_Section):
    window_hours: float = Field(default=24.0, gt=0)
    # a signal fires at the n-th signup (this one included) sharing the value within the window
    ip_signups: int = Field(default=3, ge=2)
    subnet_signups: int = Field(default=5, ge=2)
    device_signups: int = Field(default=2, ge=2)
    payment_signups: int = Field(default=2, ge=2)
    email_burst_signups: int = Field(default=3, ge=2)
    review_score: int = Field(default=30, ge=1)  # from here: verification.review_tier until step-up
    challenge_score: int = Field(default=60, ge=1)  # from here: step-up verification before first use
    weights: RiskWeights = RiskWeights()


class VerificationConfig(_Section):
    # the environment variable holding the HMAC-SHA256 key shared with the provider for its webhooks (never the
    # file); webhooks are refused while it is unset
    webhook_secret_env: str = "HYDRAGUARD_WEBHOOK_SECRET"
    webhook_tolerance: float = Field(default=300.0, gt=0)  # seconds a signed timestamp stays acceptable
    unsupported_regions: list[str] = []  # ISO 3166 codes ("XX" also covers "XX-YY")
    base_tier: str = "free"  # accounts below their type's levels or every tier rule
    review_tier: str = "free"  # the ceiling for risky signups until they hold step_up_levels
    step_up_levels: list[VerificationLevel] = ["identity"]  # what a risk or detection challenge asks for
    account_types: dict[AccountType, AccountTypeRule] = Field(default_factory=_default_account_types)
    tier_rules: list[TierRule] = Field(default_factory=_default_tier_rules)
    risk: RiskConfig = RiskConfig()

    @field_validator("unsupported_regions")
    @classmethod
    def _region_codes(cls, codes: list[str]) -> list[str]:
        for code in codes:
            if not code.isascii() or not code.replace("-", "").isalnum() or not 2 <= len(code) <= 6:
                raise ValueError(f"region {code!r} is not an ISO 3166 code")
        return [code.upper() for code in codes]


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
    verification: VerificationConfig = VerificationConfig()
    intel: IntelConfig = IntelConfig()
    alerts: AlertsConfig = AlertsConfig()
    detect: DetectConfig = DetectConfig()

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
