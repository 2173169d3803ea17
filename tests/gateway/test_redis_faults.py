"""A gateway on the Redis backend when Redis goes away: fail closed (a prompt 503) or open (serve),
never hang, and count every failure in /metrics."""

from __future__ import annotations

import os
import re
import signal
import time
import uuid

import httpx
import pytest

from tests.gateway.helpers import assert_openai_error, one_event, post_chat


def _gateway(start_gateway, redis_url: str, policy: str):
    return start_gateway(
        backend={
            "kind": "redis",
            "redis_url": redis_url,
            "redis_prefix": f"hgfault:{uuid.uuid4().hex[:8]}:",
            "redis_timeout": 0.25,
            "on_redis_error": policy,
        }
    )


def _limiter_errors(gw, policy: str) -> float:
    text = httpx.get(gw.url + "/metrics", timeout=5).text
    found = re.search(rf'^hydraguard_limiter_errors_total{{policy="{policy}"}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _timed_post(gw, key):
    started = time.monotonic()
    response = post_chat(gw, key)
    return response, time.monotonic() - started


@pytest.mark.parametrize("failure", ["killed", "frozen"])
def test_fail_closed_answers_503_promptly(start_gateway, own_redis, upstream, failure) -> None:
    proc, url = own_redis
    gw = _gateway(start_gateway, url, "closed")
    _, key = gw.account(tier="standard")
    assert post_chat(gw, key).status_code == 200  # Redis up: served
    assert httpx.get(gw.url + "/readyz", timeout=5).status_code == 200
    assert _limiter_errors(gw, "closed") == 0
    forwarded = upstream[1].total

    if failure == "killed":
        proc.kill()
        proc.wait(timeout=10)
    else:  # the process is there but never answers: only the socket timeout saves us
        os.kill(proc.pid, signal.SIGSTOP)
    try:
        for _ in range(3):
            response, elapsed = _timed_post(gw, key)
            error = assert_openai_error(response, 503, code="limiter_unavailable", type="server_error")
            assert "retry" in error["message"].lower()
            assert response.headers["retry-after"] == "1"
            assert elapsed < 2.0, f"the refusal took {elapsed:.2f}s"
        assert upstream[1].total == forwarded  # nothing was forwarded
        assert _limiter_errors(gw, "closed") == 3
        ready = httpx.get(gw.url + "/readyz", timeout=5)
        assert ready.status_code == 503
        assert "limiter" in ready.json()["problems"][0]
        assert httpx.get(gw.url + "/healthz", timeout=5).status_code == 200  # alive, just not ready
        event = one_event(gw, response)
        assert event.status == 503 and event.refusal_reason == "limiter_unavailable"
    finally:
        if failure == "frozen":
            os.kill(proc.pid, signal.SIGCONT)


def test_fail_open_serves_without_limits(start_gateway, own_redis, upstream) -> None:
    proc, url = own_redis
    gw = _gateway(start_gateway, url, "open")
    _, key = gw.account(tier="standard")
    assert post_chat(gw, key).status_code == 200
    proc.kill()
    proc.wait(timeout=10)
    forwarded = upstream[1].total
    for _ in range(3):
        response, elapsed = _timed_post(gw, key)
        assert response.status_code == 200, response.text
        assert response.json()["object"] == "chat.completion"
        assert elapsed < 2.0, f"the request took {elapsed:.2f}s"
        assert not any(h.startswith("x-ratelimit-") for h in response.headers)  # no limiter, no limit headers
    assert upstream[1].total == forwarded + 3
    assert _limiter_errors(gw, "open") == 3
    assert _limiter_errors(gw, "closed") == 0
    event = one_event(gw, response)
    assert event.status == 200 and event.refusal_reason is None


def test_decisions_already_loaded_still_apply_while_redis_is_down(start_gateway, own_redis) -> None:
    """The gateway keeps the last decisions it loaded from Redis: a blocked account stays blocked."""
    import asyncio

    from hydraguard.decide.model import Decision, DecisionType, ScopeKind
    from hydraguard.decide.store import RedisDecisionStore

    proc, url = own_redis
    gw = _gateway(start_gateway, url, "open")
    blocked, blocked_key = gw.account(tier="standard")
    _, other_key = gw.account(tier="standard")

    async def block() -> None:
        store = RedisDecisionStore.from_url(url, prefix=gw.settings.backend.redis_prefix)
        await store.add(Decision(type=DecisionType.BLOCK, scope=ScopeKind.ACCOUNT, value=blocked.id, reason="t"))
        await store.close()

    asyncio.run(block())
    deadline = time.monotonic() + 5
    while post_chat(gw, blocked_key).status_code != 403:  # the gateway's follow loop picks it up
        assert time.monotonic() < deadline, "the block never reached the gateway"
        time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=10)
    time.sleep(gw.settings.backend.decision_refresh_interval * 3)  # several failed refreshes
    assert_openai_error(post_chat(gw, blocked_key), 403, code="blocked")
    assert post_chat(gw, other_key).status_code == 200
