"""An account's tier from what it has proven: levels, age, payment history and standing.

A risky signup comes first (the review tier until it holds the step-up levels), then the account type's
required levels (below them: the base tier), then the configured rules, first fit wins.
"""

from __future__ import annotations

from collections.abc import Collection

import msgspec

from hydraguard.accounts.verification import PaymentHistory
from hydraguard.config import TierRule, VerificationConfig

DAY = 86_400.0


class Standing(msgspec.Struct, frozen=True):
    """The inputs besides levels: how old the account is, what it paid, what is decided against it."""

    age_days: float
    payments: PaymentHistory
    decisions: int  # decisions in force against the account or its groups (allow decisions excluded)


class TierAssessment(msgspec.Struct, frozen=True, kw_only=True):
    tier: str
    reason: str
    missing_levels: list[str]  # of the account type's required levels
    unmet: list[str]  # for each rule passed over: what it lacks


def unmet_conditions(rule: TierRule, account_type: str, levels: Collection[str], standing: Standing) -> list[str]:
    lacking: list[str] = []
    if rule.account_types and account_type not in rule.account_types:
        lacking.append(f"account type {' or '.join(rule.account_types)}")
    missing = [level for level in rule.levels if level not in levels]
    if missing:
        lacking.append(f"levels {', '.join(missing)}")
    if standing.age_days < rule.min_age_days:
        lacking.append(f"{rule.min_age_days:g} days of age (has {standing.age_days:.1f})")
    if standing.payments.succeeded < rule.min_payments:
        lacking.append(f"{rule.min_payments} succeeded payments (has {standing.payments.succeeded})")
    if rule.max_failed_payments is not None and standing.payments.failed > rule.max_failed_payments:
        lacking.append(f"at most {rule.max_failed_payments} failed payments (has {standing.payments.failed})")
    if standing.payments.chargebacks > rule.max_chargebacks:
        lacking.append(f"at most {rule.max_chargebacks} chargebacks (has {standing.payments.chargebacks})")
    if standing.decisions > rule.max_decisions:
        lacking.append(f"at most {rule.max_decisions} decisions in force (has {standing.decisions})")
    return lacking


def compute_tier(
    config: VerificationConfig, account_type: str, levels: Collection[str], standing: Standing, *, review: bool
) -> TierAssessment:
    required = config.account_types[account_type].required if account_type in config.account_types else []
    missing = [level for level in required if level not in levels]
    if review and not all(level in levels for level in config.step_up_levels):
        reason = f"risky signup: held at the review tier until {', '.join(config.step_up_levels)} is verified"
        return TierAssessment(tier=config.review_tier, reason=reason, missing_levels=missing, unmet=[])
    if missing:
        reason = f"the {account_type} account type needs {', '.join(missing)}"
        return TierAssessment(tier=config.base_tier, reason=reason, missing_levels=missing, unmet=[])
    unmet: list[str] = []
    for rule in config.tier_rules:
        lacking = unmet_conditions(rule, account_type, levels, standing)
        if not lacking:
            return TierAssessment(tier=rule.tier, reason=f"fits the {rule.tier} rule", missing_levels=[], unmet=unmet)
        unmet.append(f"{rule.tier}: needs {'; '.join(lacking)}")
    return TierAssessment(tier=config.base_tier, reason="fits no tier rule", missing_levels=[], unmet=unmet)
