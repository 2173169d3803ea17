"""Request and response bodies of the admin API. Strings are bounded and free of control characters, so that
bad input is refused with a 422 before it reaches a database."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from hydraguard.accounts.models import AccountStatus
from hydraguard.admin.tokens import Role
from hydraguard.config import Limits
from hydraguard.decide.model import DecisionType, ScopeKind

Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:@-]{1,100}$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
TierName = Annotated[str, StringConstraints(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9_.-]+$")]
Domain = Annotated[str, StringConstraints(max_length=253, pattern=r"^[A-Za-z0-9.-]+$")]
THIRTY_DAYS = 30 * 86_400.0
TEN_YEARS = 3_650 * 86_400.0


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    @classmethod
    def of(cls, value: Any, **extra: Any) -> Any:
        """The response for a registry or decision record (a msgspec struct)."""
        return cls.model_validate({**msgspec.to_builtins(value), **extra})


# -- orgs and accounts ---------------------------------------------------------------------------------------
class OrgIn(_In):
    name: Text
    tier: TierName = "free"


class OrgOut(_Out):
    id: str
    name: str
    tier: str
    created_at: float


class AccountIn(_In):
    org_id: Id
    tier: TierName = "free"
    email_domain: Domain | None = None
    signup_ip: str | None = Field(default=None, max_length=64)
    payment_method: Text | None = Field(
        default=None, description="The payment provider's fingerprint; stored only as a keyed hash."
    )

    @field_validator("signup_ip")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.ip_address(value)  # a ValueError becomes a 422 naming the field
        return value


class AccountUpdate(_In):
    status: AccountStatus | None = None
    tier: TierName | None = None
    limits: Limits | None = Field(default=None, description="Overrides, merged into the account's current ones.")
    clear_limits: bool = Field(default=False, description="Remove every per-account override.")


class AccountOut(_Out):
    id: str
    org_id: str
    tier: str
    status: AccountStatus
    signup_at: float
    signup_ip: str | None = None
    email_domain: str | None = None
    payment_fingerprint: str | None = None
    limit_overrides: Limits | None = None


# -- keys ----------------------------------------------------------------------------------------------------
class KeyOut(_Out):
    id: str
    account_id: str
    hint: str
    created_at: float
    revoked_at: float | None = None
    expires_at: float | None = None


class IssuedKey(KeyOut):
    key: str = Field(description="The API key: shown in this response only, never stored.")
    replaces: str | None = None


class RotateIn(_In):
    grace: float = Field(
        default=0.0, ge=0, le=THIRTY_DAYS, allow_inf_nan=False, description="Seconds the old key keeps working."
    )


# -- decisions -----------------------------------------------------------------------------------------------
class DecisionIn(_In):
    type: DecisionType
    scope: ScopeKind
    value: Text = Field(description="Key id, account id, group id, IP address or CIDR.")
    reason: Text
    ttl: float | None = Field(
        default=None, gt=0, le=TEN_YEARS, allow_inf_nan=False, description="Seconds until it expires."
    )
    limits: Limits | None = Field(default=None, description="Throttle: the reduced limits.")
    profile: Text | None = Field(default=None, description="Degrade: the output-controls profile.")


class DecisionOut(_Out):
    id: str
    type: DecisionType
    scope: ScopeKind
    value: str
    reason: str
    source: str
    created_at: float
    expires_at: float | None = None
    limits: Limits | None = None
    profile: str | None = None


class GroupIn(_In):
    accounts: list[Id] = Field(max_length=100_000, description="The group's accounts; none dissolves it.")


class GroupOut(BaseModel):
    id: str
    accounts: list[str]


# -- admin tokens --------------------------------------------------------------------------------------------
class TokenIn(_In):
    name: Id
    role: Role


class TokenOut(_Out):
    id: str
    name: str
    role: Role
    created_at: float
    revoked_at: float | None = None


class IssuedToken(TokenOut):
    token: str = Field(description="The admin token: shown in this response only, never stored.")


# -- the audit log -------------------------------------------------------------------------------------------
class AuditEntryOut(_Out):
    seq: int
    at: float
    actor: str
    role: str | None
    action: str
    target: str
    before: Any
    after: Any
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    entries: list[AuditEntryOut]
    next_after: int | None = Field(description="Pass as `after` for the next page; null at the end.")


class VerificationOut(_Out):
    ok: bool
    entries: int
    head_hash: str
    problems: list[str]
