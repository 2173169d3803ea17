"""Decisions: what the gateway does to requests in a scope until an expiry."""

from __future__ import annotations

import enum
import ipaddress
import time
import uuid

import msgspec

from hydraguard.limits.policy import LimitSet


class DecisionType(enum.StrEnum):
    ALLOW = "allow"  # exempts the scope from every other decision (an analyst's override)
    THROTTLE = "throttle"  # swaps in reduced limits for the scope
    DEGRADE = "degrade"  # serves, with the output controls' degrade profile
    CHALLENGE = "challenge"  # 403 verification_required until the account verifies
    BLOCK = "block"  # 403


class ScopeKind(enum.StrEnum):
    KEY = "key"
    ACCOUNT = "account"
    GROUP = "group"
    IP = "ip"  # an address or a CIDR


SEVERITY = {DecisionType.BLOCK: 2, DecisionType.CHALLENGE: 1}


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    type: DecisionType
    scope: ScopeKind
    value: str
    reason: str
    source: str = "cli"
    id: str = msgspec.field(default_factory=lambda: "dec_" + uuid.uuid4().hex[:16])
    created_at: float = msgspec.field(default_factory=time.time)
    expires_at: float | None = None
    limits: LimitSet | None = None  # for THROTTLE
    profile: str | None = None  # for DEGRADE: the output controls' profile name

    def __post_init__(self) -> None:
        if self.scope is ScopeKind.IP:
            ipaddress.ip_network(self.value, strict=False)  # raises ValueError for a bad address
        if self.type is DecisionType.THROTTLE and self.limits is None:
            raise ValueError("a throttle decision needs reduced limits")

    def active(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now


def normalized_scope_value(scope: ScopeKind, value: str) -> str:
    if scope is ScopeKind.IP:
        net = ipaddress.ip_network(value, strict=False)
        return str(net.network_address) if net.num_addresses == 1 else str(net)
    return value


class Resolution(msgspec.Struct, frozen=True):
    """What the decisions in force mean for one request."""

    refusal: Decision | None = None  # the BLOCK or CHALLENGE to answer with
    throttles: tuple[Decision, ...] = ()  # each swaps reduced limits into its own scope
    degrade: Decision | None = None

    @property
    def applied(self) -> Decision | None:
        """The one decision recorded on the request's event."""
        return self.refusal or (self.throttles[0] if self.throttles else None) or self.degrade


NO_DECISION = Resolution()


def resolve(decisions: list[Decision]) -> Resolution:
    """Any ALLOW exempts the request; otherwise the most severe refusal wins (newest on a tie)."""
    if not decisions or any(d.type is DecisionType.ALLOW for d in decisions):
        return NO_DECISION
    refusals = [d for d in decisions if d.type in (DecisionType.BLOCK, DecisionType.CHALLENGE)]
    refusal = max(refusals, key=lambda d: (SEVERITY[d.type], d.created_at)) if refusals else None
    throttles = tuple(d for d in decisions if d.type is DecisionType.THROTTLE)
    degrades = [d for d in decisions if d.type is DecisionType.DEGRADE]
    return Resolution(refusal, throttles, max(degrades, key=lambda d: d.created_at) if degrades else None)
