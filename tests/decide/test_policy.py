"""The policy: detections in, decisions out, on the gateway's decision store."""

from __future__ import annotations

import time

import pytest

from hydraguard.decide.model import DecisionType, ScopeKind
from hydraguard.decide.policy import Policy, PolicySettings, decision_id, group_id
from hydraguard.decide.store import MemoryDecisionStore
from hydraguard.detect.engine import Detection
from hydraguard.detect.rules import Action, Hit, Severity
from hydraguard.limits.policy import LimitSet

NOW = time.time()


def hit(action: Action, scope: ScopeKind, *, rule: str = "r", ttl: int | None = 3600, shadow: bool = False) -> Hit:
    return Hit(rule, 2, Severity.HIGH, action, scope, ttl, shadow, ("cluster.accounts = 40 (>= 5)",))


def detection(*hits: Hit, level: str = "cluster", subject: str = "cl_1", accounts=("a1", "a2", "a3")) -> Detection:
    return Detection(NOW, level, subject, tuple(accounts), hits, {})


def test_a_cluster_block_becomes_one_group_decision_and_the_members_one_group() -> None:
    plan = Policy().plan(detection(hit(Action.BLOCK, ScopeKind.GROUP, ttl=7 * 86400)), NOW)
    assert plan.group == (group_id("cl_1"), ("a1", "a2", "a3"))
    (decision,) = plan.decisions
    assert (decision.type, decision.scope, decision.value) == (DecisionType.BLOCK, ScopeKind.GROUP, "campaign:cl_1")
    assert decision.expires_at == NOW + 7 * 86400
    assert decision.source == "detect:r" and "rule r v2 on cluster cl_1" in decision.reason
    assert "cluster.accounts = 40" in decision.reason


def test_a_cluster_rule_scoped_to_accounts_gives_one_decision_per_member() -> None:
    plan = Policy().plan(detection(hit(Action.CHALLENGE, ScopeKind.ACCOUNT)), NOW)
    assert plan.group is None
    assert [(d.type, d.scope, d.value) for d in plan.decisions] == [
        (DecisionType.CHALLENGE, ScopeKind.ACCOUNT, a) for a in ("a1", "a2", "a3")
    ]
    assert len({d.id for d in plan.decisions}) == 3


def test_each_cluster_hit_acts_on_the_members_its_own_condition_covers() -> None:
    """A block whose member condition covers everyone acts on the group; a challenge covering one member (its card
    is shared, nothing else) acts on that member alone, and the block does not reach a member it does not cover."""
    block, challenge = hit(Action.BLOCK, ScopeKind.GROUP, rule="b"), hit(Action.CHALLENGE, ScopeKind.GROUP, rule="c")
    everyone = Detection(
        NOW, "cluster", "cl_1", ("a1", "a2", "a3"), (block, challenge), {}, covers=(("a1", "a2", "a3"), ("a3",))
    )
    plan = Policy().plan(everyone, NOW)
    assert plan.group == (group_id("cl_1"), ("a1", "a2", "a3"))
    assert [(d.type, d.scope, d.value) for d in plan.decisions] == [
        (DecisionType.BLOCK, ScopeKind.GROUP, "campaign:cl_1"),
        (DecisionType.CHALLENGE, ScopeKind.ACCOUNT, "a3"),
    ]
    owner = Detection(
        NOW, "cluster", "cl_1", ("a1", "a2", "a3"), (block, challenge), {}, covers=(("a1", "a2"), ("a3",))
    )
    plan = Policy().plan(owner, NOW)
    assert plan.group == (group_id("cl_1"), ("a1", "a2", "a3"))  # one budget for the cluster all the same
    assert [(d.type, d.value) for d in plan.decisions] == [
        (DecisionType.BLOCK, "a1"),
        (DecisionType.BLOCK, "a2"),
        (DecisionType.CHALLENGE, "a3"),
    ]


def test_throttle_and_degrade_carry_the_configured_limits_and_profile() -> None:
    settings = PolicySettings(throttle=LimitSet(rpm=2), degrade_profile="cheap")
    plan = Policy(settings).plan(
        detection(
            hit(Action.THROTTLE, ScopeKind.ACCOUNT, rule="t"),
            hit(Action.DEGRADE, ScopeKind.ACCOUNT, rule="d"),
            level="account",
            subject="a1",
            accounts=("a1",),
        ),
        NOW,
    )
    throttle, degrade = plan.decisions
    assert (throttle.type, throttle.limits) == (DecisionType.THROTTLE, LimitSet(rpm=2))
    assert (degrade.type, degrade.profile, degrade.limits) == (DecisionType.DEGRADE, "cheap", None)


@pytest.mark.parametrize(
    "hits",
    [
        (hit(Action.FLAG, ScopeKind.ACCOUNT, ttl=None),),
        (hit(Action.BLOCK, ScopeKind.GROUP, shadow=True),),
    ],
    ids=["flag", "shadow"],
)
def test_flags_and_shadow_rules_enforce_nothing(hits: tuple[Hit, ...]) -> None:
    plan = Policy().plan(detection(*hits), NOW)
    assert plan.decisions == () and plan.group is None


def test_a_dismissed_subject_is_not_enforced() -> None:
    policy = Policy(dismissed=lambda subject: subject == "cl_1")
    assert Policy().plan(detection(hit(Action.BLOCK, ScopeKind.GROUP)), NOW).decisions
    assert policy.plan(detection(hit(Action.BLOCK, ScopeKind.GROUP)), NOW).decisions == ()
    assert policy.plan(detection(hit(Action.BLOCK, ScopeKind.GROUP), subject="cl_2"), NOW).decisions


async def test_a_repeated_detection_renews_its_decision_and_covers_new_members() -> None:
    store, policy = MemoryDecisionStore(), Policy()
    await policy.enforce(store, [detection(hit(Action.BLOCK, ScopeKind.GROUP))], NOW)
    grown = Detection(
        NOW + 3600, "cluster", "cl_1", ("a1", "a2", "a3", "a4"), (hit(Action.BLOCK, ScopeKind.GROUP),), {}
    )
    await policy.enforce(store, [grown], NOW + 3600)
    (decision,) = await store.list()
    assert decision.id == decision_id("r", "cl_1") and decision.expires_at == NOW + 2 * 3600
    assert store.members_of(group_id("cl_1")) == {"a1", "a2", "a3", "a4"}
    # the gateway's view: the replacement account a4 is blocked through the group
    assert [d.type for d in store.match(key_id=None, account_id="a4", ip=None)] == [DecisionType.BLOCK]
