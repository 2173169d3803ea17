"""Tier computation: the account type's levels first, then a risky signup's ceiling, then the first fitting rule."""

from __future__ import annotations

from hydraguard.accounts.tiers import Standing, compute_tier
from hydraguard.accounts.verification import PaymentHistory
from hydraguard.config import VerificationConfig

CONFIG = VerificationConfig()
PAID = PaymentHistory(succeeded=2)


def standing(age_days: float = 30.0, payments: PaymentHistory = PAID, decisions: int = 0) -> Standing:
    return Standing(age_days=age_days, payments=payments, decisions=decisions)


def test_an_established_paying_individual_is_standard() -> None:
    result = compute_tier(CONFIG, "individual", {"email", "payment_method"}, standing(), review=False)
    assert result.tier == "standard" and result.reason == "fits the standard rule"
    assert result.unmet == ["enterprise: needs account type enterprise; levels organization"]


def test_the_type_s_required_levels_come_first() -> None:
    result = compute_tier(CONFIG, "education", {"email", "payment_method", "phone"}, standing(), review=False)
    assert result.tier == "free" and result.missing_levels == ["identity", "organization"]
    assert "education account type needs identity, organization" in result.reason


def test_age_payments_chargebacks_and_standing_each_hold_a_tier_back() -> None:
    levels = {"email", "payment_method"}
    young = compute_tier(CONFIG, "individual", levels, standing(age_days=2), review=False)
    assert young.tier == "free" and "7 days of age (has 2.0)" in young.unmet[-1]
    unpaid = compute_tier(CONFIG, "individual", levels, standing(payments=PaymentHistory()), review=False)
    assert unpaid.tier == "free" and "1 succeeded payments (has 0)" in unpaid.unmet[-1]
    disputed = compute_tier(CONFIG, "individual", levels, standing(payments=PaymentHistory(3, 0, 1)), review=False)
    assert disputed.tier == "free" and "at most 0 chargebacks (has 1)" in disputed.unmet[-1]
    decided = compute_tier(CONFIG, "individual", levels, standing(decisions=1), review=False)
    assert decided.tier == "free" and "decisions in force (has 1)" in decided.unmet[-1]


def test_a_risky_signup_stays_on_the_review_tier_until_it_steps_up() -> None:
    config = VerificationConfig(review_tier="trial")
    levels = {"email", "payment_method"}
    held = compute_tier(config, "individual", levels, standing(), review=True)
    assert held.tier == "trial" and "until identity is verified" in held.reason
    assert compute_tier(config, "individual", levels | {"identity"}, standing(), review=True).tier == "standard"


def test_enterprise_rule_applies_to_enterprise_accounts_only() -> None:
    levels = {"email", "payment_method", "organization"}
    assert compute_tier(CONFIG, "enterprise", levels, standing(age_days=0), review=False).tier == "enterprise"
    assert compute_tier(CONFIG, "startup", levels | {"phone"}, standing(), review=False).tier == "standard"
