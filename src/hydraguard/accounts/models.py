"""Orgs, accounts and API keys as the registry returns them."""

from __future__ import annotations

import enum

import msgspec

from hydraguard.limits.policy import LimitSet


class AccountStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    BANNED = "banned"


class Org(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    tier: str
    created_at: float


class Account(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    org_id: str
    tier: str
    status: AccountStatus
    signup_at: float
    signup_ip: str | None = None
    email_domain: str | None = None
    payment_fingerprint: str | None = None  # keyed hash, never the raw payment data
    limit_overrides: LimitSet | None = None


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    account_id: str
    hint: str
    created_at: float
    revoked_at: float | None = None
    expires_at: float | None = None  # set on the old key when it is rotated with a grace period

    def usable(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class Principal(msgspec.Struct, frozen=True):
    """Who a request is from: what authentication resolves an API key to."""

    key: ApiKey
    account: Account
    org: Org
