"""Which limits one request is checked against: every scope it falls in, with that scope's limits."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from hydraguard.accounts.models import Principal
from hydraguard.config import Settings
from hydraguard.limits.base import Slot
from hydraguard.limits.gcra import Quota
from hydraguard.limits.policy import LimitSet, scope_limits, subnet_of

RECENT_REQUESTS = 8_192  # cached request limits (about 600 bytes each: 5 MB at most); all dropped when full


class RequestLimits(NamedTuple):
    request_quotas: list[Quota]
    token_quotas: list[Quota]
    slots: list[Slot]


class LimitPolicy:
    """Tier limits for the key, account (with its overrides) and org; configured limits for the
    client IP, its subnet and each group of linked accounts; and each throttle decision's budget."""

    def __init__(self, settings: Settings) -> None:
        self._tiers = {
            name: (tier.key.to_set(), tier.account.to_set(), tier.org.to_set()) for name, tier in settings.tiers.items()
        }
        self._fallback = self._tiers.get("free")
        limits = settings.limits
        self._ip, self._subnet, self._group = limits.ip.to_set(), limits.subnet.to_set(), limits.group.to_set()
        self._v4_prefix, self._v6_prefix = limits.subnet_v4_prefix, limits.subnet_v6_prefix
        # the limits of recent requests, by key, IP, groups and throttles; an entry holds the principal it was
        # built for and serves only that same object (the registry builds a new one when an account changes)
        self._recent: dict[tuple[object, ...], tuple[Principal, RequestLimits]] = {}

    def scopes(
        self,
        principal: Principal,
        ip: str | None,
        groups: Iterable[str] = (),
        throttles: Iterable[tuple[str, LimitSet]] = (),
    ) -> list[tuple[str, str, LimitSet]]:
        """(scope, scope id, limits) for every scope; an unknown tier gets the "free" tier's limits."""
        account, org = principal.account, principal.org
        tier = self._tiers.get(account.tier, self._fallback)
        org_tier = self._tiers.get(org.tier, tier)
        scopes: list[tuple[str, str, LimitSet]] = []
        if tier is not None:
            scopes.append(("key", principal.key.id, tier[0]))
            scopes.append(("account", account.id, tier[1].merged(account.limit_overrides)))
        if org_tier is not None:
            scopes.append(("org", org.id, org_tier[2]))
        if ip is not None:
            scopes.append(("ip", ip, self._ip))
            scopes.append(("subnet", subnet_of(ip, self._v4_prefix, self._v6_prefix), self._subnet))
        scopes += [("group", group, self._group) for group in sorted(groups)]
        # a throttle is a reduced budget shared by everything its decision covers
        scopes += [("throttle", decision_id, limits) for decision_id, limits in throttles]
        return scopes

    def limits(
        self,
        principal: Principal,
        ip: str | None,
        groups: frozenset[str] = frozenset(),
        throttles: Iterable[tuple[str, LimitSet]] = (),
    ) -> RequestLimits:
        """Request quotas, token quotas (cost 0: charge them with `policy.charged`) and concurrency slots.
        The lists are shared by the requests that fall in the same scopes: read them, never change them."""
        throttles = tuple(throttles)
        cache_key = (principal.key.id, ip, groups, throttles)
        recent = self._recent.get(cache_key)
        if recent is not None and recent[0] is principal:
            return recent[1]
        found = self._build(principal, ip, groups, throttles)
        if len(self._recent) >= RECENT_REQUESTS:
            self._recent.clear()
        self._recent[cache_key] = (principal, found)
        return found

    def _build(
        self, principal: Principal, ip: str | None, groups: frozenset[str], throttles: tuple[tuple[str, LimitSet], ...]
    ) -> RequestLimits:
        request_quotas: list[Quota] = []
        token_quotas: list[Quota] = []
        slots: list[Slot] = []
        for scope, scope_id, limits in self.scopes(principal, ip, groups, throttles):
            requests, tokens, scope_slots = scope_limits(scope, scope_id, limits)
            request_quotas += requests
            token_quotas += tokens
            slots += scope_slots
        return RequestLimits(request_quotas, token_quotas, slots)
