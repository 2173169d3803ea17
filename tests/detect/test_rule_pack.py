"""The default rule pack: every shipped rule fires on a hand-written campaign case and spares its nearest
legitimate look-alike (docs/rules.md, "Testing a rule").

The features are written by hand so that these tests pin the rules, not the feature pipeline. A rule added to
the pack without a row in `CASES` fails `test_every_rule_in_the_pack_has_cases`.
"""

from __future__ import annotations

from typing import Any

import pytest

from hydraguard.detect.rules import Action, Rule, RuleSet

PACK = RuleSet.default()

# rule id -> (positive: a campaign that must fire it, negative: the nearest legitimate case, which must not)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "reasoning-extraction-request": (
        # "articulate the internal reasoning" and "return it in <thinking> tags" in one served request
        {"request.status": 200.0, "request.reasoning_extraction_score": 0.94},
        # a grading request (rubric pattern alone) from an evaluation pipeline
        {"request.status": 200.0, "request.reasoning_extraction_score": 0.6},
    ),
    "hydra-pooled-identity-cluster": (
        # a sign-up farm: 14 accounts of 14 fresh orgs, half paying with cards other orgs' accounts use too
        {
            "cluster.accounts": 14.0,
            "cluster.orgs": 14.0,
            "cluster.shared_payment_share": 0.5,
            "cluster.new_account_share": 0.93,
            "cluster.reasoning_share": 0.0,
        },
        # a campus cohort: 40 new student accounts in 40 orgs, two of them share a parent's card
        {
            "cluster.accounts": 40.0,
            "cluster.orgs": 40.0,
            "cluster.shared_payment_share": 0.05,
            "cluster.new_account_share": 0.95,
            "cluster.reasoning_share": 0.0,
        },
    ),
    "hydra-reasoning-cluster": (
        # a hydra diluting its elicitation with cover traffic
        {
            "cluster.accounts": 15.0,
            "cluster.orgs": 15.0,
            "cluster.reasoning_share": 0.3,
            "cluster.multi_turn_share": 0.0,
        },
        # a campus cohort linked by a shared homework template: many orgs, no reasoning extraction
        {
            "cluster.accounts": 35.0,
            "cluster.orgs": 35.0,
            "cluster.reasoning_share": 0.0,
            "cluster.multi_turn_share": 0.6,
        },
    ),
    "hydra-reasoning-cluster-card": (
        # the same hydra: its shared-card members are challenged beside the harvesting members blocked
        {
            "cluster.accounts": 15.0,
            "cluster.orgs": 15.0,
            "cluster.reasoning_share": 0.3,
        },
        # the same campus cohort
        {
            "cluster.accounts": 35.0,
            "cluster.orgs": 35.0,
            "cluster.reasoning_share": 0.0,
        },
    ),
    "hydra-synchronized-cluster": (
        # a load balancer spreading one workload over 20 accounts, round the clock, in step within the minute
        {
            "cluster.accounts": 20.0,
            "cluster.orgs": 20.0,
            "cluster.phase_sync": 0.9,
            "cluster.hour_entropy": 0.98,
            "cluster.extraction_area_share": 0.85,
        },
        # users of one popular coding app across time zones: 24/7 and coding-heavy, but not in step
        {
            "cluster.accounts": 60.0,
            "cluster.orgs": 60.0,
            "cluster.phase_sync": 0.1,
            "cluster.hour_entropy": 0.97,
            "cluster.extraction_area_share": 0.8,
        },
    ),
    "reasoning-trace-harvest": (
        # one account asking for its internal reasoning in a third of 300 served requests
        {"account.served": 300.0, "account.requests": 310.0, "account.reasoning_share": 0.33},
        # a heavy legitimate user who asked for reasoning a handful of times
        {"account.served": 800.0, "account.requests": 800.0, "account.reasoning_share": 0.01},
    ),
    "shared-intel-traffic": (
        # an account whose requests mostly come from exits a peer provider reported
        {"account.requests": 400.0, "account.intel_share": 0.8},
        # a user who was on a reported VPN exit for one session of many
        {"account.requests": 400.0, "account.intel_share": 0.05},
    ),
    "rotating-identity-automation": (
        # a proxy network rotating exits and clients, 24/7
        {
            "account.distinct_user_agents": 6.0,
            "account.distinct_subnets": 45.0,
            "account.hour_entropy": 0.99,
        },
        # a person on a phone (carrier NAT changes address all day), a browser and a laptop, who sleeps
        {
            "account.distinct_user_agents": 3.0,
            "account.distinct_subnets": 40.0,
            "account.hour_entropy": 0.72,
        },
    ),
}
RULES = {rule.id: rule for rule in PACK.rules}


def test_every_rule_in_the_pack_has_cases() -> None:
    assert set(RULES) == set(CASES)


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_fires_on_its_campaign_case_and_explains_why(rule_id: str) -> None:
    rule: Rule = RULES[rule_id]
    positive, _ = CASES[rule_id]
    assert rule.matches(positive)
    reasons = rule.explain(positive)
    for feature in set(rule.when.features()):
        assert any(reason.startswith(f"{feature} = ") for reason in reasons), (feature, reasons)
    hits = {hit.rule_id: hit for hit in PACK.evaluate(str(rule.level), positive)}
    assert rule_id in hits
    assert hits[rule_id].reasons == tuple(reasons)


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_spares_its_nearest_legitimate_case(rule_id: str) -> None:
    rule = RULES[rule_id]
    _, negative = CASES[rule_id]
    assert not rule.matches(negative)
    assert rule.explain(negative) == []
    assert rule_id not in [hit.rule_id for hit in PACK.evaluate(str(rule.level), negative)]


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_negative_case_is_a_near_miss(rule_id: str) -> None:
    """The legitimate case fails exactly one of the rule's conditions: it tests the rule's boundary, not an
    unrelated subject."""
    rule = RULES[rule_id]
    _, negative = CASES[rule_id]
    assert set(rule.when.features()) <= set(negative)
    [failing] = rule.when.why(negative, False)
    assert "(not " in failing


def test_pack_rules_are_reviewed_and_enforcing_ones_expire() -> None:
    for rule in PACK.rules:
        assert rule.rationale and rule.source, rule.id
        if rule.action is not Action.FLAG:
            assert rule.ttl is not None and rule.ttl > 0, rule.id


# cluster rule id -> (a campaign member its action must cover, the linked bystander it must spare)
MEMBER_CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "hydra-reasoning-cluster": (
        # an established account of the campaign, diluting its elicitation with cover traffic
        {
            "account.reasoning_share": 0.12,
            "account.reasoning_requests": 9.0,
            "account.payment_shared": 0.0,
            "account.days_since_signup_at_first_request": 40.0,
        },
        # a developer who signed up this morning, on the same residential exit, and sent the same popular prompt
        {
            "account.reasoning_share": 0.0,
            "account.reasoning_requests": 0.0,
            "account.payment_shared": 0.0,
            "account.days_since_signup_at_first_request": 0.2,
        },
    ),
    "hydra-reasoning-cluster-card": (
        # a fresh account of the campaign paying from its card pool, not yet eliciting itself
        {"account.payment_shared": 1.0, "account.payment_lead_days": 0.0, "account.reasoning_requests": 0.0},
        # a developer on the same residential exit, paying with a card of their own
        {"account.payment_shared": 0.0, "account.reasoning_requests": 0.0},
    ),
    "hydra-synchronized-cluster": (
        # a replacement account, first request hours after sign-up, already dispatched in step with the others
        {
            "account.phase_concentration": 0.8,
            "account.payment_shared": 0.0,
            "account.days_since_signup_at_first_request": 0.1,
        },
        # a new developer linked in through residential exits the proxy network also used: at work hours after
        # sign-up, but sending whenever they like, with a card of their own
        {
            "account.phase_concentration": 0.14,
            "account.payment_shared": 0.0,
            "account.days_since_signup_at_first_request": 0.33,
        },
    ),
    "hydra-pooled-identity-cluster": (
        # an account paying with a card accounts of other orgs use
        {
            "account.payment_shared": 1.0,
            "account.payment_lead_days": 0.0,
            "account.days_since_signup_at_first_request": 30.0,
        },
        # a student of the cohort who went to work the day they signed up, with a card of their own
        {"account.payment_shared": 0.0, "account.days_since_signup_at_first_request": 0.5},
    ),
}


def test_every_cluster_rule_judges_its_members_and_has_member_cases() -> None:
    cluster_rules = {rule.id for rule in PACK.rules if str(rule.level) == "cluster"}
    assert {rule_id for rule_id in cluster_rules if RULES[rule_id].members is not None} == cluster_rules
    assert set(MEMBER_CASES) == cluster_rules


@pytest.mark.parametrize("rule_id", sorted(MEMBER_CASES))
def test_cluster_rule_covers_a_member_on_its_own_evidence_and_spares_a_linked_bystander(rule_id: str) -> None:
    members = RULES[rule_id].members
    assert members is not None
    member, bystander = MEMBER_CASES[rule_id]
    assert members.holds(member)
    assert not members.holds(bystander)


def test_reasoning_cluster_covers_a_proxy_account_whose_customers_dilute_its_elicitation() -> None:
    """A proxy network's account serves mostly its customers' ordinary requests: a few elicitation requests in
    many are still its own evidence, while one in a legitimate account's hundred is not."""
    members = RULES["hydra-reasoning-cluster"].members
    assert members is not None
    proxy = {"account.reasoning_share": 0.03, "account.reasoning_requests": 4.0, "account.payment_shared": 0.0}
    one_off = {"account.reasoning_share": 0.01, "account.reasoning_requests": 1.0, "account.payment_shared": 0.0}
    assert members.holds(proxy)
    assert not members.holds(one_off)


def test_a_shared_card_alone_gets_a_challenge_and_harvesting_gets_a_block() -> None:
    """The two reasoning-cluster rules fire on the same clusters; a member whose only evidence is a card another
    org uses (perhaps a card's owner who became a customer less than 30 days before the pool used the card) is
    challenged, not blocked."""
    block, card = RULES["hydra-reasoning-cluster"], RULES["hydra-reasoning-cluster-card"]
    assert block.when == card.when
    assert (block.action, card.action) == (Action.BLOCK, Action.CHALLENGE)
    assert block.members is not None and card.members is not None
    holder = {"account.reasoning_requests": 0.0, "account.payment_shared": 1.0, "account.payment_lead_days": 0.0}
    harvester = {**holder, "account.reasoning_share": 0.2, "account.reasoning_requests": 30.0}
    assert card.members.holds({**holder, "account.reasoning_share": 0.0}) and not block.members.holds(holder)
    assert block.members.holds(harvester)


@pytest.mark.parametrize("share", [0.0, 0.049, 0.05, 0.3])
@pytest.mark.parametrize("requests", [0.0, 2.0, 3.0, 40.0])
@pytest.mark.parametrize("shared", [0.0, 1.0, 4.0])
@pytest.mark.parametrize("lead", [0.0, 29.9, 30.0, 200.0])
def test_the_two_reasoning_cluster_rules_cover_the_members_version_4_covered_but_a_card_s_owner(
    share: float, requests: float, shared: float, lead: float
) -> None:
    """Splitting the shared-card members off changed their action, not who is covered (so the detection figures
    of docs/detection.md stand), except for the card's owner: a member that paid with the card for 30 days before
    any other org's account did, and harvests no reasoning itself."""
    member = {
        "account.reasoning_share": share,
        "account.reasoning_requests": requests,
        "account.payment_shared": shared,
        "account.payment_lead_days": lead,
    }
    block, card = RULES["hydra-reasoning-cluster"].members, RULES["hydra-reasoning-cluster-card"].members
    assert block is not None and card is not None
    version_4 = share >= 0.05 or requests >= 3 or (shared >= 1 and lead < 30)
    assert (block.holds(member) or card.holds(member)) == version_4


# a stolen card's owner: a customer for 200 days before the pool's accounts signed up with the card, behaving as
# one (the campaign's fresh holders of the same card lead by nothing)
CARD_OWNER = {
    "account.payment_shared": 1.0,
    "account.payment_lead_days": 200.0,
    "account.reasoning_share": 0.0,
    "account.reasoning_requests": 0.0,
    "account.phase_concentration": 0.1,
    "account.days_since_signup_at_first_request": 150.0,
}


@pytest.mark.parametrize("rule_id", sorted(MEMBER_CASES))
def test_no_cluster_rule_covers_a_stolen_card_s_owner_and_each_card_rule_covers_its_pool(rule_id: str) -> None:
    members = RULES[rule_id].members
    assert members is not None
    assert not members.holds(CARD_OWNER)
    if "account.payment_shared" in set(members.features()):
        pool_account = {
            **CARD_OWNER,
            "account.payment_lead_days": 2.0,
            "account.days_since_signup_at_first_request": 0.1,
        }
        assert members.holds(pool_account)
