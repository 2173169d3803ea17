"""The limiter contract (`limits.base.Limiter`), one suite run against the memory and the Redis backend.

Most quotas use a period of a million seconds, so that the refill during a test is far below one
unit and every decision is exact; one test uses a short period to see the refill really happen.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from hydraguard.limits.base import Limiter, Slot, Verdict
from hydraguard.limits.gcra import Quota
from hydraguard.limits.memory import MemoryLimiter
from hydraguard.limits.redis import RedisLimiter

BIG = 1_000_000.0  # seconds: nothing refills noticeably while a test runs


def quota(key: str, limit: int, cost: int = 1, *, period: float = BIG, name: str | None = None) -> Quota:
    return Quota(key, limit, period, cost, name or f"q:{key}")


async def make_limiter(kind: str, redis_url: str | None = None, prefix: str | None = None) -> Limiter:
    if kind == "memory":
        return MemoryLimiter()
    assert redis_url is not None and prefix is not None
    # a generous timeout: these tests check decisions, not how a slow Redis is handled
    return RedisLimiter.from_url(redis_url, prefix=prefix, timeout=5.0)


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[Limiter]:
    if request.param == "redis":
        made = await make_limiter(
            "redis", request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
        )
    else:
        made = await make_limiter("memory")
    yield made
    await made.close()


@pytest.fixture
async def both(redis_url: str, redis_prefix: str) -> AsyncIterator[tuple[Limiter, Limiter]]:
    memory = await make_limiter("memory")
    shared = await make_limiter("redis", redis_url, redis_prefix)
    yield memory, shared
    await memory.close()
    await shared.close()


async def take(limiter: Limiter, *quotas: Quota, slots: tuple[Slot, ...] = (), lease: str | None = None) -> Verdict:
    return await limiter.acquire(list(quotas), list(slots), lease or "lease_" + uuid.uuid4().hex[:8])


# -- GCRA quotas -----------------------------------------------------------------------------------------------
async def test_admits_exactly_the_limit_then_refuses(limiter: Limiter) -> None:
    limit = 5
    q = quota("rpm:a", limit, name="rpm:account")
    interval = BIG / limit
    for i in range(1, limit + 1):
        verdict = await take(limiter, q)
        assert verdict.allowed, f"request {i} of {limit} refused"
        assert verdict.denied_by is None and verdict.retry_after == 0.0
        (state,) = verdict.states
        assert (state.name, state.limit, state.remaining) == ("rpm:account", limit, limit - i)
        assert state.reset_after == pytest.approx(i * interval, abs=1.0)
    for _ in range(3):  # and keeps refusing, without charging the refused requests
        refused = await take(limiter, q)
        assert not refused.allowed
        assert refused.denied_by == "rpm:account"
        assert refused.retry_after == pytest.approx(interval, abs=1.0)
        (state,) = refused.states
        assert (state.name, state.limit, state.remaining) == ("rpm:account", limit, 0)
        assert state.reset_after == pytest.approx(BIG, abs=1.0)
        assert refused.lease is None and refused.slots == ()


async def test_keys_are_independent(limiter: Limiter) -> None:
    assert (await take(limiter, quota("k1", 1))).allowed
    assert not (await take(limiter, quota("k1", 1))).allowed
    assert (await take(limiter, quota("k2", 1))).allowed


async def test_token_costs(limiter: Limiter) -> None:
    limit = 10
    interval = BIG / limit
    first = await take(limiter, quota("tpm:a", limit, 4))
    second = await take(limiter, quota("tpm:a", limit, 4))
    assert first.allowed and second.allowed
    assert first.states[0].remaining == 6 and second.states[0].remaining == 2
    assert second.states[0].reset_after == pytest.approx(8 * interval, abs=1.0)
    refused = await take(limiter, quota("tpm:a", limit, 4))
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(2 * interval, abs=1.0)  # two more units must refill
    assert refused.states[0].remaining == 2
    assert refused.states[0].reset_after == pytest.approx(8 * interval, abs=1.0)
    exact = await take(limiter, quota("tpm:a", limit, 2))  # the rest fits exactly
    assert exact.allowed and exact.states[0].remaining == 0
    assert not (await take(limiter, quota("tpm:a", limit, 1))).allowed


async def test_cost_zero_is_admitted_and_charges_nothing(limiter: Limiter) -> None:
    """The readiness probe relies on this: a zero-cost check never uses up a quota."""
    for _ in range(3):
        verdict = await take(limiter, quota("probe", 1, 0))
        assert verdict.allowed and verdict.states[0].remaining == 1
    assert (await take(limiter, quota("probe", 1, 1))).allowed


async def test_cost_above_the_limit_is_refused_forever(limiter: Limiter) -> None:
    too_big = await take(limiter, quota("tpm:b", 10, 11, name="tpm:account"))
    assert not too_big.allowed
    assert too_big.denied_by == "tpm:account"
    assert too_big.retry_after == math.inf
    assert too_big.states[0].remaining == 10  # nothing was charged
    whole = await take(limiter, quota("tpm:b", 10, 10))  # the whole limit at once is fine
    assert whole.allowed and whole.states[0].remaining == 0
    still = await take(limiter, quota("tpm:b", 10, 11))
    assert not still.allowed and still.retry_after == math.inf


async def test_several_quotas_report_a_state_each(limiter: Limiter) -> None:
    verdict = await take(limiter, quota("a", 3, name="rpm:key"), quota("b", 100, 7, name="tpm:key"))
    assert verdict.allowed
    assert [(s.name, s.limit, s.remaining) for s in verdict.states] == [("rpm:key", 3, 2), ("tpm:key", 100, 93)]


# -- all or nothing ----------------------------------------------------------------------------------------------
async def test_a_refusing_quota_charges_none_of_the_others(limiter: Limiter) -> None:
    assert (await take(limiter, quota("tight", 1))).allowed  # now exhausted
    for order in ("tight-last", "tight-first", "tight-middle"):
        roomy_a, roomy_b, tight = quota("roomy-a", 10, 3), quota("roomy-b", 5, 5), quota("tight", 1, name="tight")
        quotas = {
            "tight-last": (roomy_a, roomy_b, tight),
            "tight-first": (tight, roomy_a, roomy_b),
            "tight-middle": (roomy_a, tight, roomy_b),
        }[order]
        slot = Slot("conc:x", 1, "concurrency:x")
        refused = await take(limiter, *quotas, slots=(slot,))
        assert not refused.allowed and refused.denied_by == "tight", order
    # neither roomy quota nor the slot was charged by the three refused requests
    assert (await take(limiter, quota("roomy-a", 10, 10))).allowed
    assert (await take(limiter, quota("roomy-b", 5, 5))).allowed
    assert (await take(limiter, slots=(Slot("conc:x", 1, "concurrency:x"),))).allowed


async def test_a_full_concurrency_slot_charges_no_quota(limiter: Limiter) -> None:
    slot = Slot("conc:y", 1, "concurrency:y")
    assert (await take(limiter, slots=(slot,), lease="holder")).allowed
    refused = await take(limiter, quota("r", 4, 2), slots=(slot,), lease="other")
    assert not refused.allowed
    assert refused.denied_by == "concurrency:y"
    assert refused.retry_after == pytest.approx(1.0)
    assert (await take(limiter, quota("r", 4, 4))).allowed  # "r" was not charged


# -- concurrency slots ---------------------------------------------------------------------------------------------
async def test_concurrency_limit_and_release(limiter: Limiter) -> None:
    slot = Slot("conc:acct", 2, "concurrency:account")
    first = await take(limiter, slots=(slot,), lease="a")
    assert first.allowed and first.lease == "a" and first.slots == (slot,)
    assert (await take(limiter, slots=(slot,), lease="b")).allowed
    refused = await take(limiter, slots=(slot,), lease="c")
    assert not refused.allowed and refused.denied_by == "concurrency:account"
    assert await limiter.held("conc:acct") == 2  # type: ignore[attr-defined]

    await limiter.release([slot], "someone-else")  # not a holder: frees nothing
    assert await limiter.held("conc:acct") == 2  # type: ignore[attr-defined]
    assert not (await take(limiter, slots=(slot,), lease="c")).allowed

    await limiter.release([slot], "a")
    assert await limiter.held("conc:acct") == 1  # type: ignore[attr-defined]
    assert (await take(limiter, slots=(slot,), lease="c")).allowed
    assert not (await take(limiter, slots=(slot,), lease="d")).allowed

    await limiter.release([slot], "b")
    await limiter.release([slot], "c")
    assert await limiter.held("conc:acct") == 0  # type: ignore[attr-defined]
    await limiter.release([slot], "c")  # releasing twice is harmless
    assert await limiter.held("conc:acct") == 0  # type: ignore[attr-defined]


async def test_release_frees_every_slot_of_the_lease(limiter: Limiter) -> None:
    account, ip = Slot("conc:account:1", 1, "concurrency:account"), Slot("conc:ip:1", 1, "concurrency:ip")
    assert (await take(limiter, slots=(account, ip), lease="r1")).allowed
    assert not (await take(limiter, slots=(ip,), lease="r2")).allowed
    await limiter.release([account, ip], "r1")
    assert (await take(limiter, slots=(account, ip), lease="r2")).allowed


async def test_concurrent_acquires_never_exceed_the_slot_limit(limiter: Limiter) -> None:
    slot = Slot("conc:race", 3, "concurrency:race")
    verdicts = await asyncio.gather(*(take(limiter, slots=(slot,), lease=f"l{i}") for i in range(20)))
    assert sum(v.allowed for v in verdicts) == 3
    assert await limiter.held("conc:race") == 3  # type: ignore[attr-defined]


# -- adjust ----------------------------------------------------------------------------------------------------------
async def test_adjust_refunds_unused_tokens(limiter: Limiter) -> None:
    assert (await take(limiter, quota("tpm:r", 10, 5))).allowed
    await limiter.adjust([quota("tpm:r", 10, -3)])  # only 2 of the 5 were used
    verdict = await take(limiter, quota("tpm:r", 10, 8))
    assert verdict.allowed and verdict.states[0].remaining == 0
    assert not (await take(limiter, quota("tpm:r", 10, 1))).allowed


async def test_adjust_charges_extra_tokens(limiter: Limiter) -> None:
    assert (await take(limiter, quota("tpm:x", 10, 2))).allowed
    await limiter.adjust([quota("tpm:x", 10, 7)])  # 9 used in all
    refused = await take(limiter, quota("tpm:x", 10, 2))
    assert not refused.allowed and refused.states[0].remaining == 1
    assert (await take(limiter, quota("tpm:x", 10, 1))).allowed


async def test_adjust_may_overdraw_but_a_refund_never_exceeds_a_full_bucket(limiter: Limiter) -> None:
    assert (await take(limiter, quota("tpm:o", 10, 8))).allowed
    await limiter.adjust([quota("tpm:o", 10, 7)])  # 15 used of 10: in debt
    refused = await take(limiter, quota("tpm:o", 10, 1))
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(6 * BIG / 10, abs=1.0)  # 5 of debt and the 1 asked
    assert refused.states[0].remaining == 0  # never negative (it becomes the x-ratelimit-remaining header)
    assert refused.states[0].reset_after == pytest.approx(15 * BIG / 10, abs=1.0)
    await limiter.adjust([quota("tpm:o", 10, -100)])  # a huge refund only empties the bucket's use
    assert (await take(limiter, quota("tpm:o", 10, 10))).allowed
    assert not (await take(limiter, quota("tpm:o", 10, 1))).allowed


async def test_adjust_several_quotas_and_unknown_keys(limiter: Limiter) -> None:
    await limiter.adjust([])  # nothing to do
    await limiter.adjust([quota("fresh-a", 4, 3), quota("fresh-b", 4, -2)])
    assert (await take(limiter, quota("fresh-a", 4, 1))).allowed
    assert not (await take(limiter, quota("fresh-a", 4, 1))).allowed
    assert (await take(limiter, quota("fresh-b", 4, 4))).allowed  # a refund on a full bucket changes nothing


# -- real time -------------------------------------------------------------------------------------------------------
async def test_the_bucket_refills_with_time(limiter: Limiter) -> None:
    q = quota("rpm:fast", 2, period=0.4)  # one unit every 0.2 s
    assert (await take(limiter, q)).allowed
    assert (await take(limiter, q)).allowed
    refused = await take(limiter, q)
    assert not refused.allowed
    assert 0.1 < refused.retry_after <= 0.2 + 1e-6
    await asyncio.sleep(refused.retry_after + 0.03)
    again = await take(limiter, q)
    assert again.allowed
    assert not (await take(limiter, q)).allowed  # exactly one unit came back, not the whole burst


# -- both backends agree ----------------------------------------------------------------------------------------------
async def test_backends_report_the_same_states(both: tuple[Limiter, Limiter]) -> None:
    memory, shared = both
    script = [
        ([quota("a", 7, 3, name="tpm:a"), quota("b", 4, name="rpm:b")], "ok"),
        ([quota("a", 7, 3, name="tpm:a"), quota("b", 4, name="rpm:b")], "ok"),
        ([quota("a", 7, 3, name="tpm:a"), quota("b", 4, name="rpm:b")], "no"),
        ([quota("b", 4, name="rpm:b"), quota("a", 7, 1, name="tpm:a")], "ok"),
        ([quota("b", 4, name="rpm:b")], "ok"),
        ([quota("b", 4, name="rpm:b")], "no"),
        ([quota("a", 7, 8, name="tpm:a")], "no"),
    ]
    for step, (quotas, expected) in enumerate(script):
        got = [await take(limiter, *quotas) for limiter in (memory, shared)]
        assert [v.allowed for v in got] == [expected == "ok"] * 2, step
        m, r = got
        assert m.denied_by == r.denied_by, step
        assert [(s.name, s.limit, s.remaining) for s in m.states] == [
            (s.name, s.limit, s.remaining) for s in r.states
        ], step
        for ms, rs in zip(m.states, r.states, strict=True):
            assert ms.reset_after == pytest.approx(rs.reset_after, abs=1.0), step
        assert m.retry_after == pytest.approx(r.retry_after, abs=1.0), step


async def test_redis_state_is_shared_between_limiter_instances(redis_url: str, redis_prefix: str) -> None:
    """Two RedisLimiters on one prefix (two gateway processes) draw from one bucket."""
    one = await make_limiter("redis", redis_url, redis_prefix)
    two = await make_limiter("redis", redis_url, redis_prefix)
    other = await make_limiter("redis", redis_url, redis_prefix + "other:")
    try:
        verdicts = await asyncio.gather(*(take(lim, quota("shared", 10)) for lim in [one, two] * 10))
        assert sum(v.allowed for v in verdicts) == 10
        assert (await take(other, quota("shared", 10))).allowed  # another prefix is another bucket
    finally:
        for lim in (one, two, other):
            await lim.close()


async def test_redis_keys_expire_when_the_bucket_is_full_again(redis_url: str, redis_prefix: str) -> None:
    import redis.asyncio as aioredis

    lim = RedisLimiter.from_url(redis_url, prefix=redis_prefix, timeout=5.0)
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert (await take(lim, quota("ttl", 10, 1, period=20.0))).allowed
        ttl_ms = await client.pttl(f"{redis_prefix}l:ttl")
        assert 0 < ttl_ms <= 2_001  # one unit of a 2 s interval
        assert (await take(lim, slots=(Slot("slot", 1),), lease="x")).allowed
        assert 0 < await client.pttl(f"{redis_prefix}l:slot") <= lim.lease_ttl * 1000
    finally:
        await lim.close()
        await client.aclose()


async def test_redis_unreachable_raises_limiter_unavailable_quickly() -> None:
    from hydraguard.limits.base import LimiterUnavailable
    from hydraguard.testing.servers import free_port

    lim = RedisLimiter.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout=0.25)
    try:
        started = time.monotonic()
        for call in (
            lim.acquire([quota("x", 1)], [], "l"),
            lim.adjust([quota("x", 1)]),
            lim.release([Slot("s", 1)], "l"),
        ):
            with pytest.raises(LimiterUnavailable):
                await call
        assert time.monotonic() - started < 2.0
    finally:
        await lim.close()
