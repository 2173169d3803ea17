"""Request and response bodies of the verification, signup and webhook routes (docs/accounts.md)."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints, field_validator

from hydraguard.accounts.verification import Outcome, PaymentOutcome, Source
from hydraguard.admin.schemas import AccountOut, DecisionOut, Id, Text, _In, _Out
from hydraguard.config import AccountType, VerificationLevel

Email = Annotated[str, StringConstraints(max_length=320, pattern=r"^[^@\s\x00-\x1f\x7f]{1,64}@[A-Za-z0-9.-]{1,253}$")]
Region = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}(-[A-Za-z0-9]{1,3})?$")]


class SignupIn(_In):
    org_id: Id | None = Field(default=None, description="An existing org; or give org_name for a new one.")
    org_name: Text | None = None
    account_type: AccountType = "individual"
    email: Email | None = Field(default=None, description="Only its domain and a keyed hash of its shape are kept.")
    ip: str | None = Field(default=None, max_length=64, description="The address the signup came from.")
    device_id: Text | None = Field(default=None, description="The provider's device id; stored as a keyed hash.")
    payment_method: Text | None = Field(default=None, description="The payment fingerprint; stored as a keyed hash.")
    region: Region | None = Field(default=None, description="ISO 3166 code, e.g. DE or US-CA.")
    provider_ref: Text | None = None

    @field_validator("ip")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.ip_address(value)  # a ValueError becomes a 422 naming the field
        return value


class SignalOut(BaseModel):
    name: str
    weight: int
    detail: str


class SignupOut(_Out):
    account_id: str
    at: float
    account_type: str
    region: str | None
    provider_ref: str | None
    score: int
    signals: list[SignalOut]
    review: bool
    challenged: bool
    verification_required: bool
    required_levels: list[str]


class SignupResult(BaseModel):
    account: AccountOut
    signup: SignupOut
    challenge: DecisionOut | None = Field(description="The challenge it starts with, if it must verify first.")


class LevelIn(_In):
    level: VerificationLevel
    outcome: Outcome
    provider_ref: Text | None = None


class PaymentIn(_In):
    outcome: PaymentOutcome
    provider_ref: Text | None = None


class WebhookLevelIn(LevelIn):
    account_id: Id


class WebhookPaymentIn(PaymentIn):
    account_id: Id


class LevelOut(_Out):
    level: str
    outcome: Outcome
    source: Source
    provider_ref: str | None
    at: float


class TierAssessmentOut(BaseModel):
    tier: str
    reason: str
    missing_levels: list[str]
    unmet: list[str]


class PaymentsOut(BaseModel):
    succeeded: int
    failed: int
    chargebacks: int


class StandingOut(BaseModel):
    age_days: float
    payments: PaymentsOut
    decisions: int


class VerificationStatusOut(_Out):
    account_id: str
    account_type: str
    tier: str
    computed: TierAssessmentOut
    levels: list[LevelOut]
    required_levels: list[str]
    payments: PaymentsOut
    standing: StandingOut
    challenges: list[DecisionOut]
    signup: SignupOut | None
