"""Signup risk, verification levels, payments and tiers through the audited services (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hydraguard.accounts import keys, risk
from hydraguard.accounts.registry import accounts
from hydraguard.accounts.risk import SIGNUP_SOURCE, SignupLinks, SignupRequest, signup_links
from hydraguard.accounts.verification import Outcome, PaymentOutcome, Source
from hydraguard.admin.services import AdminServices, Invalid, NotFound
from hydraguard.config import RiskConfig, VerificationConfig
from hydraguard.decide.model import Decision, DecisionType, ScopeKind
from hydraguard.intel.indicators import make_indicator
from hydraguard.intel.store import IntelStore

from .conftest import CLI_ACTOR, SECRET, TIERS


@pytest.fixture
def verifying(services: AdminServices) -> AdminServices:
    """The services with a review tier of their own and one unsupported region."""
    return AdminServices(
        services.registry,
        services.decisions,
        secret=SECRET,
        tiers=(*TIERS, "trial"),
        verification=VerificationConfig(review_tier="trial", unsupported_regions=["XX"]),
    )


def signup(admin: AdminServices, org_id: str | None = None, **fields: Any) -> Any:
    org = {"org_id": org_id} if org_id else {"org_name": "org-" + str(fields.get("email", "x"))}
    return asyncio.run(admin.signup(CLI_ACTOR, SignupRequest(**fields), **org))


def signals(result: Any) -> set[str]:
    return {s.name for s in result[1].signals}


def test_a_clean_individual_signup_starts_free_and_unchallenged(verifying: AdminServices) -> None:
    account, record, challenge = signup(verifying, email="ada@example.org", ip="192.0.2.1", region="DE")
    assert account.tier == "free" and account.email_domain == "example.org"
    assert record.score == 0 and record.signals == [] and not record.verification_required and challenge is None
    assert asyncio.run(verifying.list_decisions()) == []


def test_each_signal_fires_at_its_threshold(verifying: AdminServices) -> None:
    org = verifying.create_org(CLI_ACTOR, "lab").id
    assert signals(signup(verifying, org, email="a@mailinator.com")) == {"disposable_email"}
    # numbered addresses: the third of one shape within the window is a burst
    assert signals(signup(verifying, org, email="distill1@corp.io")) == set()
    assert signals(signup(verifying, org, email="distill2@corp.io")) == set()
    assert signals(signup(verifying, org, email="distill3+x@corp.io")) == {"email_burst"}
    # one IP: the third signup; one /24: the fifth
    assert signals(signup(verifying, org, ip="198.51.100.1")) == set()
    assert signals(signup(verifying, org, ip="198.51.100.1")) == set()
    assert signals(signup(verifying, org, ip="198.51.100.1")) == {"ip_velocity"}
    assert signals(signup(verifying, org, ip="198.51.100.2")) == set()
    assert signals(signup(verifying, org, ip="198.51.100.3")) == {"subnet_velocity"}
    # one device, one payment method: the second
    assert signals(signup(verifying, org, device_id="dev-9")) == set()
    assert signals(signup(verifying, org, device_id="dev-9")) == {"device_velocity"}
    assert signals(signup(verifying, org, payment_method="pm_1")) == set()
    assert signals(signup(verifying, org, payment_method="pm_1")) == {"payment_velocity"}
    assert signals(signup(verifying, org, region="XX-01")) == {"unsupported_region"}


def test_a_payment_method_reused_by_another_org_and_threat_intel(verifying: AdminServices) -> None:
    signup(verifying, verifying.create_org(CLI_ACTOR, "first").id, payment_method="pm_shared")
    risky = VerificationConfig(risk=RiskConfig(window_hours=1e-9))  # no velocity: only the reuse counts
    quiet = AdminServices(verifying.registry, verifying.decisions, secret=SECRET, tiers=TIERS, verification=risky)
    assert signals(signup(quiet, verifying.create_org(CLI_ACTOR, "second").id, payment_method="pm_shared")) == {
        "payment_shared"
    }
    IntelStore(verifying.registry.engine).apply(
        [
            make_indicator("email_domain", "evil.example", source="feed"),
            make_indicator("ip", "203.0.113.0/24", source="feed"),
        ]
    )
    account, record, challenge = signup(verifying, email="x@mail.evil.example", ip="203.0.113.9")
    assert signals((account, record)) == {"threat_intel"}
    assert record.score == 60 and record.review and record.challenged and account.tier == "trial"
    assert record.required_levels == ["email", "identity"]  # the type's levels and the step-up
    assert challenge is not None and challenge.source == SIGNUP_SOURCE and challenge.value == account.id
    assert "email_domain:" in record.signals[0].detail and "ip:" in record.signals[0].detail


def test_a_strict_pathway_verifies_before_first_use_and_the_challenge_lifts(verifying: AdminServices) -> None:
    account, record, challenge = signup(verifying, account_type="education", email="prof@uni.edu")
    assert record.score == 0 and record.verification_required and not record.challenged
    assert record.required_levels == ["email", "phone", "identity", "organization"]
    assert challenge is not None and challenge.type is DecisionType.CHALLENGE
    report = verifying.report_verification
    for level in ("email", "phone", "organization"):
        status = asyncio.run(report(CLI_ACTOR, account.id, level, Outcome.VERIFIED, provider_ref=f"ref-{level}"))
        assert [d.id for d in status.challenges] == [challenge.id]
    failed = asyncio.run(report(CLI_ACTOR, account.id, "identity", Outcome.FAILED, source=Source.WEBHOOK))
    assert [d.id for d in failed.challenges] == [challenge.id] and failed.computed.missing_levels == ["identity"]
    passed = asyncio.run(report(CLI_ACTOR, account.id, "identity", Outcome.VERIFIED, source=Source.WEBHOOK))
    assert passed.challenges == [] and asyncio.run(verifying.list_decisions()) == []
    assert {r.level for r in passed.levels} == {"email", "phone", "identity", "organization"}
    assert next(r for r in passed.levels if r.level == "identity").source is Source.WEBHOOK
    actions = [e.action for e in verifying.audit_page(limit=1000)]
    assert actions[-6:] == ["account.signup", *["verification.report"] * 5]
    assert verifying.verify_audit().ok


def test_other_challenges_need_the_step_up_level(verifying: AdminServices) -> None:
    account, _, _ = signup(verifying, email="bob@example.org")
    detected = Decision(type=DecisionType.CHALLENGE, scope=ScopeKind.ACCOUNT, value=account.id, reason="detection")
    asyncio.run(verifying.add_decision(CLI_ACTOR, detected))
    status = asyncio.run(verifying.report_verification(CLI_ACTOR, account.id, "email", Outcome.VERIFIED))
    assert [d.id for d in status.challenges] == [detected.id]  # email alone does not answer a detection
    status = asyncio.run(verifying.report_verification(CLI_ACTOR, account.id, "identity", Outcome.VERIFIED))
    assert status.challenges == []


def test_payments_and_age_move_the_tier_and_every_change_is_audited(verifying: AdminServices) -> None:
    account, _, _ = signup(verifying, email="carol@example.org", payment_method="pm_carol")
    for level in ("email", "payment_method"):
        asyncio.run(verifying.report_verification(CLI_ACTOR, account.id, level, Outcome.VERIFIED))
    status = asyncio.run(verifying.record_payment(CLI_ACTOR, account.id, PaymentOutcome.SUCCEEDED))
    assert status.tier == "free" and "7 days of age" in status.computed.unmet[-1]  # too young for standard
    with verifying.registry.engine.begin() as conn:  # a week passes
        conn.execute(accounts.update().values(signup_at=account.signup_at - 8 * 86_400))
    entries = len(verifying.audit_page(limit=1000))
    status = asyncio.run(verifying.recompute_tier(CLI_ACTOR, account.id))
    assert status.tier == "standard" and verifying.get_account(account.id).tier == "standard"
    last = verifying.audit_page(limit=1000)[-1]
    assert len(verifying.audit_page(limit=1000)) == entries + 1 and last.action == "account.retier"
    assert last.before == {"tier": "free"} and last.after == {"tier": "standard"}
    asyncio.run(verifying.recompute_tier(CLI_ACTOR, account.id))  # nothing changed: no entry
    assert len(verifying.audit_page(limit=1000)) == entries + 1
    status = asyncio.run(
        verifying.record_payment(CLI_ACTOR, account.id, PaymentOutcome.CHARGEBACK, provider_ref="dp_1")
    )
    assert status.tier == "free" and status.payments.chargebacks == 1
    everything = str(verifying.audit_page(limit=1000))
    assert "pm_carol" not in everything and "carol@" not in everything


def test_refusals_change_nothing(verifying: AdminServices) -> None:
    account, _, _ = signup(verifying, email="dan@example.org")
    entries = verifying.audit_page(limit=1000)
    before = verifying.list_accounts()
    with pytest.raises(Invalid, match=r"org_id .* or org_name"):
        asyncio.run(verifying.signup(CLI_ACTOR, SignupRequest()))
    with pytest.raises(Invalid, match="unknown account type 'guild'"):
        asyncio.run(verifying.signup(CLI_ACTOR, SignupRequest(account_type="guild"), org_name="x"))
    with pytest.raises(Invalid, match="is not an address"):
        asyncio.run(verifying.signup(CLI_ACTOR, SignupRequest(email="nope"), org_name="x"))
    with pytest.raises(NotFound, match="org_nope"):
        asyncio.run(verifying.signup(CLI_ACTOR, SignupRequest(), org_id="org_nope"))
    with pytest.raises(Invalid, match="unknown verification level 'dna'"):
        asyncio.run(verifying.report_verification(CLI_ACTOR, account.id, "dna", Outcome.VERIFIED))
    with pytest.raises(NotFound, match="acct_nope"):
        asyncio.run(verifying.record_payment(CLI_ACTOR, "acct_nope", PaymentOutcome.FAILED))
    assert verifying.audit_page(limit=1000) == entries and verifying.list_accounts() == before
    assert len(verifying.list_orgs()) == 1


def test_signup_links_are_the_keyed_device_and_address_shape_of_accounts_that_have_one(
    verifying: AdminServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    farm = [signup(verifying, email=f"distill{i}@corp.io", device_id="dev-farm")[0] for i in range(2)]
    plain = signup(verifying, email="ada@example.org", ip="192.0.2.1")[0]
    links = signup_links(verifying.registry.engine)
    shape = keys.keyed_fingerprint(SECRET, "email-shape", "distill#@corp.io")
    device = keys.keyed_fingerprint(SECRET, "device", "dev-farm")
    assert links == {account.id: SignupLinks(device, shape) for account in farm}
    assert plain.id not in links
    assert signup_links(verifying.registry.engine, [farm[1].id, plain.id]) == {farm[1].id: links[farm[1].id]}
    assert signup_links(verifying.registry.engine, []) == {}
    monkeypatch.setattr(risk, "_IN_CHUNK", 1)  # many ids: one query per chunk
    assert signup_links(verifying.registry.engine, [a.id for a in farm] + [plain.id]) == links
