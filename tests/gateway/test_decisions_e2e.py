"""Decisions end to end through the embedded SQL decision store: block, challenge, throttle, degrade,
allow, expiry, changes made by another process, and the metrics they leave."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa

from hydraguard.decide.model import Decision, DecisionType, ScopeKind
from hydraguard.decide.store import SqlDecisionStore
from hydraguard.limits.policy import LimitSet
from tests.gateway.helpers import assert_openai_error, one_event, post_chat, wait_for

HYDRAGUARD = Path(sys.executable).with_name("hydraguard")
VERIFY_URL = "https://verify.example.test/start"


@pytest.fixture
def gw(start_gateway):
    return start_gateway(
        server={"trusted_proxies": ["127.0.0.1/32"], "verification_url": VERIFY_URL},
        backend={"decision_refresh_interval": 0.1},
    )


def add(gw, type: DecisionType, scope: ScopeKind, value: str, **kwargs) -> Decision:
    decision = Decision(type=type, scope=scope, value=value, reason="test", source="test", **kwargs)
    return asyncio.run(gw.gateway.decisions.add(decision))


def remove(gw, decision: Decision) -> None:
    assert asyncio.run(gw.gateway.decisions.remove(decision.id))


def from_ip(gw, key, ip: str):
    return post_chat(gw, key, headers={"x-forwarded-for": ip})


def assert_blocked(gw, upstream, response, decision: Decision):
    error = assert_openai_error(response, 403, code="blocked", type="permission_error")
    request_id = response.headers["x-request-id"]
    assert request_id in error["message"]  # the reference support asks for
    assert decision.id not in error["message"] and decision.reason not in error["message"]  # nothing internal
    event = one_event(gw, response)
    assert event.refusal_reason == "blocked" and event.status == 403
    assert event.decision_type == "block" and event.decision_id == decision.id
    return event


# -- block ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scope", ["key", "account", "group"])
def test_block_by_identity(gw, upstream, scope):
    account, key = gw.account(tier="standard")
    _, other_key = gw.account(tier="standard")
    if scope == "key":
        (record,) = gw.gateway.registry.list_keys(account.id)
        value = record.id
    elif scope == "account":
        value = account.id
    else:
        value = "grp_blocked"
        asyncio.run(gw.gateway.decisions.set_group(value, [account.id]))
    decision = add(gw, DecisionType.BLOCK, ScopeKind(scope), value)
    before = upstream[1].total
    blocked = post_chat(gw, key)
    assert_blocked(gw, upstream, blocked, decision)
    assert upstream[1].total == before
    assert post_chat(gw, other_key).status_code == 200  # nobody else
    if scope == "key":  # another key of the same account is not blocked
        _, second_key = gw.gateway.registry.issue_key(account.id)
        assert post_chat(gw, second_key).status_code == 200
    remove(gw, decision)
    assert post_chat(gw, key).status_code == 200


@pytest.mark.parametrize(
    ("value", "blocked_ip", "free_ip"),
    [
        ("10.9.8.7", "10.9.8.7", "10.9.8.6"),
        ("10.9.0.0/16", "10.9.200.1", "10.10.0.1"),
        ("2001:db8::/32", "2001:db8:1::5", "2001:db9::1"),
    ],
    ids=["address", "cidr-v4", "cidr-v6"],
)
def test_block_by_ip(gw, upstream, value, blocked_ip, free_ip):
    _, key = gw.account(tier="standard")
    decision = add(gw, DecisionType.BLOCK, ScopeKind.IP, value)
    before = upstream[1].total
    blocked = from_ip(gw, key, blocked_ip)
    event = assert_blocked(gw, upstream, blocked, decision)
    assert event.client_ip == blocked_ip
    assert upstream[1].total == before
    assert from_ip(gw, key, free_ip).status_code == 200


def test_block_of_the_peer_address_without_trusted_proxies(start_gateway, upstream):
    gw = start_gateway()  # no trusted proxies: X-Forwarded-For is ignored
    _, key = gw.account(tier="standard")
    decision = add(gw, DecisionType.BLOCK, ScopeKind.IP, "127.0.0.0/8")
    blocked = post_chat(gw, key, headers={"x-forwarded-for": "10.1.1.1"})
    event = assert_blocked(gw, upstream, blocked, decision)
    assert event.client_ip == "127.0.0.1"


# -- challenge ------------------------------------------------------------------------------------------------------
def test_challenge(gw, upstream):
    account, key = gw.account(tier="standard")
    decision = add(gw, DecisionType.CHALLENGE, ScopeKind.ACCOUNT, account.id)
    before = upstream[1].total
    response = post_chat(gw, key)
    error = assert_openai_error(response, 403, code="verification_required", type="permission_error")
    assert VERIFY_URL in error["message"]
    assert response.headers["x-verification-url"] == VERIFY_URL
    assert response.headers["x-request-id"] in error["message"]
    assert upstream[1].total == before
    event = one_event(gw, response)
    assert event.refusal_reason == "verification_required" and event.status == 403
    assert event.decision_type == "challenge" and event.decision_id == decision.id


def test_block_outranks_challenge(gw):
    account, key = gw.account(tier="standard")
    add(gw, DecisionType.BLOCK, ScopeKind.ACCOUNT, account.id)
    add(gw, DecisionType.CHALLENGE, ScopeKind.ACCOUNT, account.id)  # newer, but less severe
    assert_openai_error(post_chat(gw, key), 403, code="blocked")


# -- throttle and degrade ---------------------------------------------------------------------------------------------
def test_throttle_swaps_in_reduced_limits(gw, upstream):
    account, key = gw.account(tier="standard")  # 600 rpm of its own
    decision = add(gw, DecisionType.THROTTLE, ScopeKind.ACCOUNT, account.id, limits=LimitSet(rpm=1))
    first = post_chat(gw, key)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "1"
    before = upstream[1].total
    second = post_chat(gw, key)
    error = assert_openai_error(second, 429, code="rate_limit_exceeded", type="requests")
    assert "throttle" in error["message"]
    assert upstream[1].total == before
    for response in (first, second):
        event = one_event(gw, response)
        assert event.decision_type == "throttle" and event.decision_id == decision.id
    assert one_event(gw, second).refusal_reason == "rate_limited:rpm:throttle"
    remove(gw, decision)
    assert post_chat(gw, key).status_code == 200


def test_throttle_on_an_ip_range_is_one_shared_budget(gw):
    (_, key1), (_, key2) = gw.account(tier="standard"), gw.account(tier="standard")
    add(gw, DecisionType.THROTTLE, ScopeKind.IP, "10.20.0.0/16", limits=LimitSet(rpm=2))
    assert from_ip(gw, key1, "10.20.0.1").status_code == 200
    assert from_ip(gw, key2, "10.20.5.5").status_code == 200
    assert from_ip(gw, key1, "10.20.9.9").status_code == 429
    assert from_ip(gw, key1, "10.21.0.1").status_code == 200  # outside the range


def test_degrade_serves_and_records(gw, upstream):
    account, key = gw.account(tier="standard")
    decision = add(gw, DecisionType.DEGRADE, ScopeKind.ACCOUNT, account.id, profile="terse")
    before = upstream[1].total
    response = post_chat(gw, key)
    assert response.status_code == 200
    assert response.json()["object"] == "chat.completion"
    assert upstream[1].total == before + 1
    event = one_event(gw, response)
    assert event.decision_type == "degrade" and event.decision_id == decision.id
    assert event.refusal_reason is None and event.status == 200


# -- allow and expiry ------------------------------------------------------------------------------------------------
def test_allow_exempts_from_a_block(gw):
    account, key = gw.account(tier="standard")
    (record,) = gw.gateway.registry.list_keys(account.id)
    add(gw, DecisionType.BLOCK, ScopeKind.IP, "10.30.0.0/16")
    add(gw, DecisionType.BLOCK, ScopeKind.ACCOUNT, account.id)
    assert_openai_error(from_ip(gw, key, "10.30.0.1"), 403, code="blocked")
    allow = add(gw, DecisionType.ALLOW, ScopeKind.KEY, record.id)
    response = from_ip(gw, key, "10.30.0.1")
    assert response.status_code == 200, response.text
    event = one_event(gw, response)
    assert event.decision_type is None and event.refusal_reason is None
    # the allow covers only its own scope
    _, other_key = gw.account(tier="standard")
    assert_openai_error(from_ip(gw, other_key, "10.30.0.1"), 403, code="blocked")
    remove(gw, allow)
    assert_openai_error(from_ip(gw, key, "10.30.0.1"), 403, code="blocked")


def test_allow_exempts_from_a_throttle(gw):
    account, key = gw.account(tier="standard")
    add(gw, DecisionType.THROTTLE, ScopeKind.ACCOUNT, account.id, limits=LimitSet(rpm=1))
    add(gw, DecisionType.ALLOW, ScopeKind.ACCOUNT, account.id)
    assert [post_chat(gw, key).status_code for _ in range(3)] == [200, 200, 200]


def test_expired_decisions_do_not_apply(gw):
    account, key = gw.account(tier="standard")
    add(gw, DecisionType.BLOCK, ScopeKind.ACCOUNT, account.id, expires_at=time.time() - 1)
    response = post_chat(gw, key)
    assert response.status_code == 200
    assert one_event(gw, response).decision_type is None


def test_a_decision_stops_applying_when_it_expires(gw):
    account, key = gw.account(tier="standard")
    add(gw, DecisionType.BLOCK, ScopeKind.ACCOUNT, account.id, expires_at=time.time() + 1.0)
    assert_openai_error(post_chat(gw, key), 403, code="blocked")
    wait_for(lambda: post_chat(gw, key).status_code == 200, timeout=3.0, interval=0.1)


# -- another process ----------------------------------------------------------------------------------------------
def _config_for(gw, tmp_path: Path) -> Path:
    settings = gw.settings
    path = tmp_path / "cli.toml"
    path.write_text(
        f"[server]\nsecret = {settings.server.secret!r}\nupstream = {settings.server.upstream!r}\n\n"
        f"[registry]\nurl = {settings.registry.url!r}\n\n"
        f"[events]\ndir = {settings.events.dir!r}\n"
    )
    return path


def _cli(config: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRAGUARD_")}
    done = subprocess.run(
        [str(HYDRAGUARD), "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_decision_added_by_the_cli_takes_effect(gw, upstream, tmp_path):
    account, key = gw.account(tier="standard")
    assert post_chat(gw, key).status_code == 200
    config = _config_for(gw, tmp_path)
    out = _cli(
        config, "decisions", "add", "--type", "block", "--scope", "account", "--value", account.id, "--reason", "abuse"
    )
    decision = msgspec.json.decode(out.strip().splitlines()[-1])
    assert decision["type"] == "block" and decision["value"] == account.id and decision["source"] == "cli"
    added = time.monotonic()
    blocked = wait_for(lambda: (r := post_chat(gw, key)).status_code == 403 and r, timeout=3.0, interval=0.05)
    assert time.monotonic() - added < 3.0
    event = one_event(gw, blocked)
    assert event.decision_id == decision["id"] and event.refusal_reason == "blocked"
    assert decision["id"] in _cli(config, "decisions", "list")

    _cli(config, "decisions", "remove", decision["id"])
    wait_for(lambda: post_chat(gw, key).status_code == 200, timeout=3.0, interval=0.05)
    assert decision["id"] not in _cli(config, "decisions", "list")


def test_decision_added_by_another_store_takes_effect(gw):
    """A second store on the same database stands in for another gateway process or an analyst's tool."""
    account, key = gw.account(tier="standard")
    other = SqlDecisionStore(sa.create_engine(gw.settings.registry.url), refresh_interval=0.1)
    throttle = Decision(
        type=DecisionType.THROTTLE,
        scope=ScopeKind.ACCOUNT,
        value=account.id,
        reason="test",
        limits=LimitSet(rpm=1),
    )
    asyncio.run(other.add(throttle))
    wait_for(lambda: gw.gateway.decisions.match(key_id=None, account_id=account.id, ip=None), timeout=3.0)
    assert post_chat(gw, key).status_code == 200
    assert post_chat(gw, key).status_code == 429
    asyncio.run(other.set_group("grp_other", [account.id]))
    wait_for(lambda: gw.gateway.decisions.groups_of(account.id) == {"grp_other"}, timeout=3.0)
    asyncio.run(other.remove(throttle.id))
    wait_for(lambda: not gw.gateway.decisions.match(key_id=None, account_id=account.id, ip=None), timeout=3.0)
    assert post_chat(gw, key).status_code == 200


# -- metrics -----------------------------------------------------------------------------------------------------------
def _metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_decisions_and_requests(gw):
    import httpx

    blocked_account, blocked_key = gw.account(tier="standard")
    degraded_account, degraded_key = gw.account(tier="standard")
    add(gw, DecisionType.BLOCK, ScopeKind.ACCOUNT, blocked_account.id)
    add(gw, DecisionType.DEGRADE, ScopeKind.ACCOUNT, degraded_account.id)
    for _ in range(2):
        assert post_chat(gw, blocked_key).status_code == 403
    assert post_chat(gw, degraded_key).status_code == 200
    _, plain_key = gw.account(tier="standard")
    assert post_chat(gw, plain_key).status_code == 200
    metrics = httpx.get(gw.url + "/metrics", timeout=10)
    assert metrics.status_code == 200
    text = metrics.text
    assert _metric(text, 'hydraguard_decisions_applied_total{type="block"}') == 2
    assert _metric(text, 'hydraguard_decisions_applied_total{type="degrade"}') == 1
    chat = 'endpoint="/v1/chat/completions"'
    assert _metric(text, f'hydraguard_requests_total{{{chat},outcome="blocked"}}') == 2
    assert _metric(text, f'hydraguard_requests_total{{{chat},outcome="ok"}}') == 2
    assert _metric(text, "hydraguard_events_total") == 4
