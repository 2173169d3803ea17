"""Where an account stands with verification: what it holds and needs, its tier and why, its signup risk."""

from __future__ import annotations

import msgspec

from hydraguard.accounts.risk import SignupRecord
from hydraguard.accounts.tiers import Standing, TierAssessment
from hydraguard.accounts.verification import LevelReport, PaymentHistory
from hydraguard.decide.model import Decision


class VerificationStatus(msgspec.Struct, frozen=True, kw_only=True):
    account_id: str
    account_type: str
    tier: str  # the account's tier now
    computed: TierAssessment  # the tier its record earns; written to the account on the next report or recompute
    levels: list[LevelReport]  # held: the latest report of each is a success
    required_levels: list[str]  # by its account type
    payments: PaymentHistory
    standing: Standing
    challenges: list[Decision]  # in force against the account
    signup: SignupRecord | None  # None for an account created without a signup assessment
