"""The shared admin operations: one audit entry per change, in the change's transaction; refusals change nothing."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from hydraguard.accounts.models import AccountStatus
from hydraguard.admin import audit
from hydraguard.admin.audit import Actor
from hydraguard.admin.services import AdminServices, Conflict, Invalid, NotFound
from hydraguard.admin.tables import audit_log
from hydraguard.admin.tokens import Role
from hydraguard.decide.model import Decision, DecisionType, ScopeKind
from hydraguard.decide.policy import Policy
from hydraguard.decide.store import RedisDecisionStore, SqlDecisionStore
from hydraguard.detect.engine import Detection
from hydraguard.detect.rules import Action, Hit, Severity
from hydraguard.limits.policy import LimitSet

from .conftest import CLI_ACTOR, SECRET, TIERS

ANALYST = Actor("token:alice", "analyst")


def _dump(services: AdminServices) -> str:
    """Every stored audit column, as one text."""
    with services.registry.engine.connect() as conn:
        return "\n".join(str(tuple(row)) for row in conn.execute(sa.select(audit_log)))


def _block(value: str = "10.0.0.0/8") -> Decision:
    return Decision(type=DecisionType.BLOCK, scope=ScopeKind.IP, value=value, reason="abuse", source="test")


def test_each_change_writes_one_entry_with_who_what_before_and_after(services: AdminServices) -> None:
    org = services.create_org(CLI_ACTOR, "acme", "standard")
    account = services.create_account(CLI_ACTOR, org.id, tier="standard", payment_method="pm_raw_card_4242")
    updated = services.update_account(ANALYST, account.id, status=AccountStatus.SUSPENDED, limits=LimitSet(rpm=5))
    key, plaintext = services.issue_key(CLI_ACTOR, account.id)
    successor, successor_plaintext = services.rotate_key(CLI_ACTOR, key.id, grace=60)
    revoked = services.revoke_key(CLI_ACTOR, successor.id)
    token, token_plaintext = services.create_token(CLI_ACTOR, "ops", Role.ANALYST)
    services.revoke_token(CLI_ACTOR, token.id)

    entries = services.audit_page()
    assert [(e.action, e.target) for e in entries] == [
        ("org.create", org.id),
        ("account.create", account.id),
        ("account.update", account.id),
        ("key.issue", key.id),
        ("key.rotate", key.id),
        ("key.revoke", successor.id),
        ("token.create", token.id),
        ("token.revoke", token.id),
    ]
    assert entries[0].actor == "cli:tester" and entries[0].role is None and entries[0].before is None
    assert entries[0].after == {"id": org.id, "name": "acme", "tier": "standard", "created_at": org.created_at}
    update = entries[2]
    assert (update.actor, update.role) == ("token:alice", "analyst")
    assert update.before["status"] == "active" and update.before["limit_overrides"] is None
    assert update.after["status"] == "suspended" and update.after["limit_overrides"] == {"rpm": 5}
    assert updated.limit_overrides == LimitSet(rpm=5)
    rotate = entries[4]
    assert rotate.before["expires_at"] is None and rotate.after["replaced"]["expires_at"] is not None
    assert rotate.after["successor"]["id"] == successor.id
    assert entries[5].before["revoked_at"] is None and entries[5].after["revoked_at"] == revoked.revoked_at
    assert entries[6].after["role"] == "analyst" and entries[7].after["revoked_at"] is not None
    assert services.verify_audit().ok

    stored = _dump(services)
    for secret in (plaintext, successor_plaintext, token_plaintext, "pm_raw_card_4242"):
        assert secret not in stored and secret[4:-4] not in stored
    assert account.payment_fingerprint in stored  # the keyed hash links accounts; the card is not there


async def test_decisions_and_groups_are_audited_and_reach_the_gateways_store(services: AdminServices) -> None:
    decision = await services.add_decision(ANALYST, _block())
    members = await services.set_group(ANALYST, "grp_ring", ["acct_b", "acct_a", "acct_a"])
    regrouped = await services.set_group(ANALYST, "grp_ring", ["acct_c"])
    removed = await services.remove_decision(ANALYST, decision.id)

    assert members == ["acct_a", "acct_b"] and regrouped == ["acct_c"] and removed == decision
    entries = services.audit_page()
    assert [(e.action, e.target) for e in entries] == [
        ("decision.add", decision.id),
        ("group.set", "group:grp_ring"),
        ("group.set", "group:grp_ring"),
        ("decision.remove", decision.id),
    ]
    assert entries[0].after["value"] == "10.0.0.0/8" and entries[0].before is None
    assert (entries[1].before, entries[1].after) == ([], ["acct_a", "acct_b"])
    assert (entries[2].before, entries[2].after) == (["acct_a", "acct_b"], ["acct_c"])
    assert entries[3].before["id"] == decision.id and entries[3].after is None

    gateway_store = SqlDecisionStore(services.registry.engine)
    await gateway_store.refresh(force=True)
    assert gateway_store.groups_of("acct_c") == {"grp_ring"} and gateway_store.groups_of("acct_a") == frozenset()
    await services.add_decision(ANALYST, _block("10.9.0.0/16"))
    await gateway_store.refresh()
    assert [d.value for d in gateway_store.match(key_id=None, account_id=None, ip="10.9.1.1")] == ["10.9.0.0/16"]


async def test_refusals_change_nothing_and_write_no_entry(services: AdminServices) -> None:
    org = services.create_org(CLI_ACTOR, "acme")
    account = services.create_account(CLI_ACTOR, org.id)
    key, _ = services.issue_key(CLI_ACTOR, account.id)
    services.revoke_key(CLI_ACTOR, key.id)
    token, _ = services.create_token(CLI_ACTOR, "ops", Role.VIEWER)
    services.revoke_token(CLI_ACTOR, token.id)
    before = _dump(services)
    refusals: list[tuple[type[Exception], str, object]] = [
        (Invalid, "unknown tier 'gold'", lambda: services.create_org(CLI_ACTOR, "x", "gold")),
        (NotFound, "org_nope", lambda: services.create_account(CLI_ACTOR, "org_nope")),
        (Invalid, "not an IP address", lambda: services.create_account(CLI_ACTOR, org.id, signup_ip="999.0.0.1")),
        (Invalid, "nothing to change", lambda: services.update_account(CLI_ACTOR, account.id)),
        (
            Invalid,
            "not both",
            lambda: services.update_account(CLI_ACTOR, account.id, limits=LimitSet(rpm=1), clear_overrides=True),
        ),
        (Invalid, "unknown tier", lambda: services.update_account(CLI_ACTOR, account.id, tier="gold")),
        (NotFound, "acct_nope", lambda: services.update_account(CLI_ACTOR, "acct_nope", tier="free")),
        (NotFound, "acct_nope", lambda: services.issue_key(CLI_ACTOR, "acct_nope")),
        (Conflict, "cannot be rotated", lambda: services.rotate_key(CLI_ACTOR, key.id)),
        (Invalid, "negative", lambda: services.rotate_key(CLI_ACTOR, key.id, grace=-1)),
        (Conflict, "already revoked", lambda: services.revoke_key(CLI_ACTOR, key.id)),
        (NotFound, "key_nope", lambda: services.revoke_key(CLI_ACTOR, "key_nope")),
        (Conflict, "named 'ops' exists", lambda: services.create_token(CLI_ACTOR, "ops", Role.ADMIN)),
        (Conflict, "already revoked", lambda: services.revoke_token(CLI_ACTOR, token.id)),
        (NotFound, "tok_nope", lambda: services.revoke_token(CLI_ACTOR, "tok_nope")),
    ]
    for error, message, call in refusals:
        with pytest.raises(error, match=message):
            call()  # type: ignore[operator]
    with pytest.raises(NotFound, match="dec_nope"):
        await services.remove_decision(CLI_ACTOR, "dec_nope")
    assert _dump(services) == before
    assert len(services.list_orgs()) == 1 and len(services.list_accounts()) == 1 and len(services.list_keys()) == 1
    assert len(services.list_tokens()) == 1
    assert services.get_account(account.id).status is AccountStatus.ACTIVE


async def test_a_change_whose_entry_cannot_be_written_is_rolled_back(
    services: AdminServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = services.create_org(CLI_ACTOR, "acme")
    account = services.create_account(CLI_ACTOR, org.id)

    def broken_append(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(audit, "append", broken_append)
    with pytest.raises(OSError, match="disk full"):
        services.issue_key(CLI_ACTOR, account.id)
    with pytest.raises(OSError, match="disk full"):
        services.update_account(CLI_ACTOR, account.id, status=AccountStatus.BANNED)
    with pytest.raises(OSError, match="disk full"):
        await services.add_decision(CLI_ACTOR, _block())
    with pytest.raises(OSError, match="disk full"):
        await services.set_group(CLI_ACTOR, "grp_x", ["acct_a"])
    assert services.list_keys() == []
    assert services.get_account(account.id).status is AccountStatus.ACTIVE
    gateway_store = SqlDecisionStore(services.registry.engine)
    await gateway_store.refresh(force=True)
    assert await gateway_store.list() == [] and gateway_store.groups_of("acct_a") == frozenset()
    assert [e.action for e in services.audit_page()] == ["org.create", "account.create"]


async def test_redis_decisions_are_undone_when_their_entry_cannot_be_written(
    registry, redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisDecisionStore.from_url(redis_url, prefix=redis_prefix)
    services = AdminServices(registry, store, secret=SECRET, tiers=TIERS)
    try:
        kept = await services.add_decision(ANALYST, _block())
        await services.set_group(ANALYST, "grp_ring", ["acct_a"])

        def broken_append(*args: object, **kwargs: object) -> None:
            raise OSError("disk full")

        monkeypatch.setattr(audit, "append", broken_append)
        with pytest.raises(OSError):
            await services.add_decision(ANALYST, _block("192.0.2.0/24"))
        with pytest.raises(OSError):
            await services.remove_decision(ANALYST, kept.id)
        with pytest.raises(OSError):
            await services.set_group(ANALYST, "grp_ring", ["acct_z"])
        monkeypatch.undo()

        other = RedisDecisionStore.from_url(redis_url, prefix=redis_prefix)
        await other.refresh(force=True)
        assert [d.id for d in await other.list()] == [kept.id]
        assert other.groups_of("acct_a") == {"grp_ring"} and other.groups_of("acct_z") == frozenset()
        await other.close()
        assert [e.action for e in services.audit_page()] == ["decision.add", "group.set"]
    finally:
        await store.close()


def test_concurrent_changes_form_one_chain(services: AdminServices) -> None:
    def create(worker: int) -> None:
        for i in range(5):
            services.create_org(Actor(f"cli:worker{worker}"), f"org-{worker}-{i}")

    threads = [threading.Thread(target=create, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = services.verify_audit()
    assert result.ok and result.entries == 30 == len(services.list_orgs())


async def test_lifting_a_cluster_campaign_removes_the_decisions_its_rules_put_on_single_members(
    services: AdminServices,
) -> None:
    """A cluster rule that covers only some members acts on them one by one (a shared-card challenge beside a
    block of the group); lifting the campaign removes those too, and leaves a member's own account-rule decision."""
    block = Hit("hydra-reasoning-cluster", 5, Severity.CRITICAL, Action.BLOCK, ScopeKind.GROUP, 86400, False, ("x",))
    card = Hit("hydra-reasoning-cluster-card", 1, Severity.HIGH, Action.CHALLENGE, ScopeKind.GROUP, 86400, False, ())
    accounts = ("acct_1", "acct_2", "acct_3")
    detection = Detection(1e9, "cluster", "cl_lift", accounts, (block, card), {}, covers=(accounts, ("acct_3",)))
    own = Hit("reasoning-trace-harvest", 1, Severity.HIGH, Action.BLOCK, ScopeKind.ACCOUNT, 86400, False, ())
    alone = Detection(1e9, "account", "acct_1", ("acct_1",), (own,), {})
    [campaign_id] = services.campaigns.record([detection])
    await Policy().enforce(services.decisions, [detection, alone], now=time.time())
    assert len(await services.decisions.list()) == 3

    lifted = await services.lift_campaign(ANALYST, campaign_id)

    assert sorted((d.type, d.value) for d in lifted) == [
        (DecisionType.BLOCK, "campaign:cl_lift"),
        (DecisionType.CHALLENGE, "acct_3"),
    ]
    assert [(d.source, d.value) for d in await services.decisions.list()] == [
        ("detect:reasoning-trace-harvest", "acct_1")
    ]


async def test_a_request_rule_s_campaign_is_enforced_and_lifted_on_its_key_or_address(
    services: AdminServices,
) -> None:
    degrade = Hit("reasoning-extraction-request", 1, Severity.MEDIUM, Action.DEGRADE, ScopeKind.KEY, 3600, False, ())
    by_key = Detection(1e9, "request", "key:key_7f", ("acct_1",), (degrade,), {})
    guess = Hit("guesses-keys", 1, Severity.MEDIUM, Action.BLOCK, ScopeKind.IP, 3600, False, ())
    by_address = Detection(1e9, "request", "ip:203.0.113.5", (), (guess,), {})
    key_campaign, address_campaign = services.campaigns.record([by_key, by_address])
    await Policy().enforce(services.decisions, [by_key, by_address], now=time.time())
    assert sorted((d.scope, d.value) for d in await services.decisions.list()) == [
        (ScopeKind.IP, "203.0.113.5"),
        (ScopeKind.KEY, "key_7f"),
    ]

    analyst = await services.enforce_campaign(ANALYST, address_campaign, DecisionType.CHALLENGE)
    assert (analyst.scope, analyst.value) == (ScopeKind.IP, "203.0.113.5")  # a campaign without accounts
    lifted = await services.lift_campaign(ANALYST, key_campaign)
    assert [(d.scope, d.value) for d in lifted] == [(ScopeKind.KEY, "key_7f")]
    assert sorted(d.type for d in await services.decisions.list()) == [DecisionType.BLOCK, DecisionType.CHALLENGE]
