"""The policy: turns detections into decisions for the gateway (CrowdSec's "profiles" step).

Detection proposes, the policy disposes. Each enforcing, non-shadow rule hit becomes decisions of the rule's
action for the accounts it covers (a cluster rule's own `members` condition), scoped as the rule says (an account,
or a cluster as a decision-store group), lasting the rule's TTL.
A cluster's accounts become one group, so they share the group budget (`[limits] group`): a hydra of 25,000
accounts gets the budget of one customer, and its newest member is covered as soon as it links.

Decision ids are derived from (rule, subject), so a repeated detection renews its decision (new expiry, the
grown member list) instead of piling up copies. Lifting a campaign (`admin.services.AdminServices.lift_campaign`)
removes what its detections put in place, found in the store by source and value, so it works from any process.
Subjects an analyst has dismissed are never enforced again until the dismissal is lifted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hydraguard.decide.model import Decision, DecisionType, ScopeKind
from hydraguard.decide.store import DecisionStore
from hydraguard.detect.rules import Action, Hit
from hydraguard.limits.policy import LimitSet

if TYPE_CHECKING:
    from hydraguard.detect.engine import Detection

SOURCE_PREFIX = "detect:"
_TYPES = {
    Action.THROTTLE: DecisionType.THROTTLE,
    Action.DEGRADE: DecisionType.DEGRADE,
    Action.CHALLENGE: DecisionType.CHALLENGE,
    Action.BLOCK: DecisionType.BLOCK,
}


@dataclass(frozen=True)
class PolicySettings:
    throttle: LimitSet = field(default_factory=lambda: LimitSet(rpm=6, tpm=4_000, concurrency=1))
    degrade_profile: str = "default"
    default_ttl: float = 86_400.0  # for an enforcing rule written without a TTL


@dataclass(frozen=True)
class Enforcement:
    """What one detection asks of the decision store."""

    subject: str
    decisions: tuple[Decision, ...]
    group: tuple[str, tuple[str, ...]] | None = None  # (group id, its member accounts)


def decision_id(rule_id: str, subject: str) -> str:
    return "dec_" + hashlib.sha256(f"{rule_id}\x00{subject}".encode()).hexdigest()[:16]


def group_id(subject: str) -> str:
    return f"campaign:{subject}"


def request_subject(subject: str) -> tuple[ScopeKind, str] | None:
    """The key or address a request rule's subject names (`key:<id>`, `ip:<address>`); None for any other."""
    kind, _, value = subject.partition(":")
    return (ScopeKind(kind), value) if kind in (ScopeKind.KEY, ScopeKind.IP) and value else None


class Policy:
    def __init__(
        self, settings: PolicySettings | None = None, dismissed: Callable[[str], bool] = lambda subject: False
    ) -> None:
        self.settings = settings or PolicySettings()
        self._dismissed = dismissed

    def plan(self, detection: Detection, now: float) -> Enforcement:
        """The decisions a detection calls for (none for flags, shadow rules or dismissed subjects)."""
        hits = [h for h in detection.hits if h.action in _TYPES and not h.shadow]
        if not hits or self._dismissed(detection.subject):
            return Enforcement(detection.subject, ())
        decisions = []
        for index, hit in enumerate(detection.hits):
            if hit.action in _TYPES and not hit.shadow:
                scope, values = self._scope(hit, detection, detection.covered_by(index))
                decisions += [self._decision(hit, detection, scope, value, now) for value in values]
        # a group rule's cluster shares one budget, whichever members each of its decisions covers
        grouped = any(h.scope is ScopeKind.GROUP for h in hits)
        group = (group_id(detection.subject), detection.accounts) if grouped else None
        return Enforcement(detection.subject, tuple(decisions), group)

    @staticmethod
    def _scope(hit: Hit, detection: Detection, covered: tuple[str, ...]) -> tuple[ScopeKind, tuple[str, ...]]:
        """A group rule acts on the cluster's group when it covers all of the detection's accounts, else on the
        accounts it covers: a member covered only by a milder rule's condition (a challenge for a shared card) is
        not held to a harsher rule's action (a block for harvesting reasoning)."""
        named = request_subject(detection.subject)
        if hit.scope in (ScopeKind.KEY, ScopeKind.IP) and named is not None:
            return named[0], (named[1],)
        # otherwise rules are validated to name an account or a group (detect/rules.py)
        if hit.scope is ScopeKind.GROUP and covered == detection.accounts:
            return ScopeKind.GROUP, (group_id(detection.subject),)
        return ScopeKind.ACCOUNT, covered

    def _decision(self, hit: Hit, detection: Detection, scope: ScopeKind, value: str, now: float) -> Decision:
        kind = _TYPES[hit.action]
        subject = value if scope is ScopeKind.ACCOUNT else detection.subject
        return Decision(
            id=decision_id(hit.rule_id, subject),
            type=kind,
            scope=scope,
            value=value,
            reason=f"rule {hit.rule_id} v{hit.version} on {detection.level} {detection.subject}: "
            + "; ".join(hit.reasons),
            source=SOURCE_PREFIX + hit.rule_id,
            created_at=now,
            expires_at=now + (hit.ttl or self.settings.default_ttl),
            limits=self.settings.throttle if kind is DecisionType.THROTTLE else None,
            profile=self.settings.degrade_profile if kind is DecisionType.DEGRADE else None,
        )

    async def apply(self, store: DecisionStore, enforcement: Enforcement) -> None:
        # the group first: a group decision written before its members would match nobody for a moment,
        # harmless, but members written first would leave a window where the new member is not covered
        if enforcement.group is not None:
            await store.set_group(*enforcement.group)
        for decision in enforcement.decisions:
            await store.add(decision)

    async def enforce(self, store: DecisionStore, detections: Iterable[Detection], now: float) -> int:
        """Plan and apply every detection; returns the number of decisions written."""
        written = 0
        for detection in detections:
            enforcement = self.plan(detection, now)
            await self.apply(store, enforcement)
            written += len(enforcement.decisions)
        return written
