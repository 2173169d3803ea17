"""Which limits a request gets (`LimitPolicy.limits`), the cache of recent answers, and `charged`."""

from __future__ import annotations

import pytest

from hydraguard.accounts.models import Account, AccountStatus, ApiKey, Org, Principal
from hydraguard.config import Settings
from hydraguard.limits import scopes
from hydraguard.limits.gcra import Quota
from hydraguard.limits.policy import LimitSet, charged
from hydraguard.limits.scopes import LimitPolicy


def principal(overrides: LimitSet | None = None, *, key: str = "key_1", account: str = "acct_1") -> Principal:
    return Principal(
        ApiKey(id=key, account_id=account, hint="sk-…abcd", created_at=0.0),
        Account(
            id=account,
            org_id="org_1",
            tier="free",
            status=AccountStatus.ACTIVE,
            signup_at=0.0,
            limit_overrides=overrides,
        ),
        Org(id="org_1", name="org", tier="free", created_at=0.0),
    )


@pytest.fixture
def policy() -> LimitPolicy:
    free = {
        "key": {"rpm": 30, "tpm": 20_000, "concurrency": 2},
        "account": {"rpm": 60, "tpm": 40_000, "tpd": 1_000_000, "concurrency": 4},
        "org": {"rpm": 120, "tpm": 80_000, "tpd": 2_000_000, "concurrency": 8},
    }
    return LimitPolicy(Settings(server={"secret": "test"}, tiers={"free": free}))


def quota_keys(found: scopes.RequestLimits) -> list[str]:
    return [q.key for q in found.request_quotas + found.token_quotas] + [s.key for s in found.slots]


def test_every_scope_of_the_request_is_limited(policy: LimitPolicy) -> None:
    found = policy.limits(principal(), "203.0.113.9", frozenset({"grp_b", "grp_a"}))
    keys = quota_keys(found)
    for scope_key in ("key:key_1", "account:acct_1", "org:org_1", "ip:203.0.113.9", "subnet:203.0.113.0/24"):
        assert any(k.endswith(scope_key) for k in keys), scope_key
    # groups in a stable order, whatever the set's iteration order
    assert [q.key for q in found.request_quotas if ":group:" in q.key] == ["rpm:group:grp_a", "rpm:group:grp_b"]
    assert all(q.cost == 1 for q in found.request_quotas) and all(q.cost == 0 for q in found.token_quotas)


def test_a_repeated_request_reuses_its_limits(policy: LimitPolicy) -> None:
    who = principal()
    first = policy.limits(who, "203.0.113.9", frozenset({"grp_a"}))
    assert policy.limits(who, "203.0.113.9", frozenset({"grp_a"})) is first
    # another address, group set or throttle is another set of limits
    assert policy.limits(who, "203.0.113.10", frozenset({"grp_a"})) is not first
    assert policy.limits(who, "203.0.113.9", frozenset()) is not first
    throttled = policy.limits(who, "203.0.113.9", frozenset({"grp_a"}), [("dec_1", LimitSet(rpm=5))])
    assert throttled is not first
    assert ("rpm:throttle:dec_1", 5) in [(q.key, q.limit) for q in throttled.request_quotas]


def test_an_account_changed_in_the_registry_gets_its_new_limits(policy: LimitPolicy) -> None:
    """The registry builds a new principal when an account changes: the cached limits of the old one (same
    key id, same address) must not be served for it."""
    before = policy.limits(principal(), "203.0.113.9")
    after = policy.limits(principal(LimitSet(rpm=7, tpm=70)), "203.0.113.9")
    assert after is not before
    account_quotas = {q.name: q.limit for q in after.request_quotas + after.token_quotas if ":account" in q.name}
    assert account_quotas["rpm:account"] == 7 and account_quotas["tpm:account"] == 70


def test_the_cache_of_recent_requests_is_bounded(policy: LimitPolicy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scopes, "RECENT_REQUESTS", 10)
    who = principal()
    for i in range(25):
        policy.limits(who, f"198.51.100.{i}")
        assert len(policy._recent) <= 10
    # still right after the cache was emptied
    assert any(q.key == "rpm:ip:198.51.100.24" for q in policy.limits(who, "198.51.100.24").request_quotas)


def test_charged_sets_the_cost_and_leaves_the_originals_alone() -> None:
    quotas = [Quota("tpm:account:a", 100, 60.0, 0, "tpm:account"), Quota("tpd:account:a", 1000, 86_400.0, 0, "tpd")]
    refund = charged(quotas, -12)
    assert refund == [q._replace(cost=-12) for q in quotas]
    assert all(type(q) is Quota for q in refund) and refund[0].interval == 0.6
    assert [q.cost for q in quotas] == [0, 0]
