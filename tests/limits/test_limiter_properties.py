"""Property-based checks of the limiters.

(a) With a period so long that nothing refills, both backends admit exactly the greedy set of a
    random request sequence, and so make identical decisions.
(b) The memory limiter on a fake clock matches a reference model of GCRA written independently as a
    leaky bucket in exact rational arithmetic: a level (units in use) that drains one unit per
    interval; a request fits iff level + cost <= limit; a refund never takes the level below zero.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hydraguard.limits.base import Limiter, Verdict
from hydraguard.limits.gcra import Quota
from hydraguard.limits.memory import MemoryLimiter
from hydraguard.limits.redis import RedisLimiter

BIG = 1_000_000.0


@pytest.fixture
async def both(redis_url: str, redis_prefix: str) -> AsyncIterator[tuple[Limiter, Limiter]]:
    memory = MemoryLimiter()
    shared = RedisLimiter.from_url(redis_url, prefix=redis_prefix, timeout=5.0)
    yield memory, shared
    await shared.close()


# -- (a) greedy admission, both backends ----------------------------------------------------------------------
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=st.integers(1, 30), costs=st.lists(st.integers(0, 35), max_size=40))
async def test_both_backends_admit_exactly_the_greedy_set(
    both: tuple[Limiter, Limiter], limit: int, costs: list[int]
) -> None:
    key = "greedy:" + uuid.uuid4().hex  # a fresh bucket for every example
    used = 0
    for i, cost in enumerate(costs):
        expected = used + cost <= limit
        q = Quota(key, limit, BIG, cost, "tpm:account")
        verdicts = [await limiter.acquire([q], [], f"l{i}") for limiter in both]
        assert [v.allowed for v in verdicts] == [expected, expected], (i, used, cost)
        if expected:
            used += cost
        if expected:
            want_retry: Any = 0.0
        elif cost > limit:
            want_retry = math.inf
        else:  # the units missing, refilled at one per interval
            want_retry = pytest.approx((used + cost - limit) * BIG / limit, abs=1.0)
        for v in verdicts:
            assert v.states[0].remaining == limit - used
            assert v.retry_after == want_retry


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    limit=st.integers(1, 20),
    ops=st.lists(st.tuples(st.booleans(), st.integers(-25, 25)), max_size=40),
)
async def test_both_backends_agree_with_adjustments(
    both: tuple[Limiter, Limiter], limit: int, ops: list[tuple[bool, int]]
) -> None:
    """Requests mixed with reconciliations (refunds and overdrafts, as `_settle` makes them): both
    backends decide and report exactly as the greedy model with `used = max(0, used + delta)`."""
    key = "adjusted:" + uuid.uuid4().hex
    used = 0
    for i, (is_request, amount) in enumerate(ops):
        if not is_request:
            for limiter in both:
                await limiter.adjust([Quota(key, limit, BIG, amount, "tpm:account")])
            used = max(0, used + amount)
            continue
        cost = abs(amount)
        expected = used + cost <= limit
        verdicts = [await lim.acquire([Quota(key, limit, BIG, cost, "tpm:account")], [], f"l{i}") for lim in both]
        assert [v.allowed for v in verdicts] == [expected, expected], (i, used, cost)
        if expected:
            used += cost
        for v in verdicts:
            assert v.states[0].remaining == max(0, limit - used), (i, used, cost)
            assert v.states[0].reset_after == pytest.approx(used * BIG / limit, abs=1.0)


# -- (b) the memory limiter against a reference model ------------------------------------------------------------
@dataclass
class Bucket:
    """The reference: a leaky bucket in exact arithmetic."""

    limit: int
    interval: Fraction
    level: Fraction = Fraction(0)  # units in use
    at: Fraction | None = None  # when `level` was last brought up to date

    def drain(self, now: Fraction) -> None:
        if self.at is not None:
            self.level = max(Fraction(0), self.level - (now - self.at) / self.interval)
        self.at = now

    def fits(self, cost: int) -> bool:
        return self.level + cost <= self.limit


@dataclass
class Reference:
    buckets: list[Bucket]
    admitted: list[list[tuple[Fraction, int]]] = field(default_factory=list)

    def acquire(self, now: Fraction, costs: list[int]) -> tuple[bool, int | None, list[int], list[Fraction], Fraction]:
        """(allowed, index of the refusing bucket, remaining, reset_after, retry_after) of one request."""
        for b in self.buckets:
            b.drain(now)
        for i, (b, cost) in enumerate(zip(self.buckets, costs, strict=True)):
            if not b.fits(cost):
                retry = Fraction(-1) if cost > b.limit else (b.level + cost - b.limit) * b.interval
                return False, i, [max(0, math.floor(b.limit - b.level))], [b.level * b.interval], retry
        for b, cost in zip(self.buckets, costs, strict=True):
            b.level += cost
        return (
            True,
            None,
            [math.floor(b.limit - b.level) for b in self.buckets],
            [b.level * b.interval for b in self.buckets],
            Fraction(0),
        )

    def adjust(self, now: Fraction, deltas: list[int]) -> None:
        for b, delta in zip(self.buckets, deltas, strict=True):
            b.drain(now)
            b.level = max(Fraction(0), b.level + delta)


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def _check(verdict: Verdict, want: tuple[bool, int | None, list[int], list[Fraction], Fraction], names: list[str]):
    allowed, refused_by, remaining, reset_after, retry = want
    assert verdict.allowed == allowed
    assert verdict.denied_by == (None if refused_by is None else names[refused_by])
    assert [s.remaining for s in verdict.states] == remaining
    for got, expected in zip([s.reset_after for s in verdict.states], reset_after, strict=True):
        assert got == pytest.approx(float(expected), abs=1e-6)
    if retry < 0:
        assert verdict.retry_after == math.inf
    else:
        assert verdict.retry_after == pytest.approx(float(retry), abs=1e-6)


# Two quotas (say rpm and tpm) checked together. Intervals are binary fractions and the clock moves in
# sixteenths of a second, so that float arithmetic is exact and every decision at a boundary is exact.
# A second variant uses the non-binary intervals of real limits (60 s / limit) near a small clock.
ops = st.lists(
    st.tuples(
        st.sampled_from(["acquire", "acquire", "acquire", "adjust"]),
        st.integers(0, 48),  # advance, in sixteenths of a second
        st.integers(0, 3),  # cost of the first quota
        st.integers(-6, 14),  # cost (or, for adjust, delta) of the second quota
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    start=st.sampled_from([0.0, 1000.0, 1_700_000_000.0]),
    limits=st.tuples(st.integers(1, 5), st.integers(1, 12)),
    intervals=st.tuples(st.sampled_from([0.125, 0.25, 1.0]), st.sampled_from([0.0625, 0.25, 0.5, 2.0])),
    steps=ops,
)
def test_memory_limiter_matches_the_reference_exactly(start, limits, intervals, steps) -> None:
    _run_against_reference(
        start, limits, [limit * interval for limit, interval in zip(limits, intervals, strict=True)], steps
    )


@settings(max_examples=200, deadline=None)
@given(
    limits=st.tuples(st.integers(1, 7), st.integers(1, 13)),
    periods=st.tuples(st.sampled_from([60.0, 1.0, 3.0]), st.sampled_from([60.0, 7.0, 86_400.0])),
    steps=ops,
)
def test_memory_limiter_matches_the_reference_with_real_periods(limits, periods, steps) -> None:
    _run_against_reference(1000.0, limits, list(periods), steps)


def _run_now(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (the memory limiter's) without an event loop."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise AssertionError("the coroutine suspended")


def _run_against_reference(start: float, limits: tuple[int, int], periods: list[float], steps) -> None:
    clock = FakeClock(start)
    limiter = MemoryLimiter(clock=clock)
    names = ["rpm:account", "tpm:account"]
    reference = Reference(
        [Bucket(limit, Fraction(period) / limit) for limit, period in zip(limits, periods, strict=True)]
    )
    for kind, advance, cost_a, cost_b in steps:
        clock.now += advance / 16
        now = Fraction(clock.now)
        if kind == "adjust":
            limiter_quotas = [Quota(n, lim, p, 0, n) for n, lim, p in zip(names, limits, periods, strict=True)]
            limiter_quotas[1] = Quota(names[1], limits[1], periods[1], cost_b, names[1])
            _run_now(limiter.adjust(limiter_quotas))
            reference.adjust(now, [0, cost_b])
            continue
        costs = [cost_a, max(cost_b, 0)]
        quotas = [Quota(n, lim, p, c, n) for n, lim, p, c in zip(names, limits, periods, costs, strict=True)]
        verdict = limiter.acquire_sync(quotas, [], "lease")
        _check(verdict, reference.acquire(now, costs), names)


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 10),
    interval=st.sampled_from([0.125, 0.5, 1.0]),
    steps=st.lists(st.tuples(st.integers(0, 24), st.integers(0, 10)), max_size=80),
)
def test_no_window_admits_more_than_the_burst_plus_the_refill(limit, interval, steps) -> None:
    """In any window [t1, t2], GCRA admits at most `limit + (t2 - t1) / interval` units."""
    clock = FakeClock(5000.0)
    limiter = MemoryLimiter(clock=clock)
    period = limit * interval
    admitted: list[tuple[float, int]] = []
    for advance, cost in steps:
        clock.now += advance / 16
        if limiter.acquire_sync([Quota("k", limit, period, cost, "q")], [], "l").allowed:
            admitted.append((clock.now, cost))
    for i, (t1, _) in enumerate(admitted):
        total = 0
        for t2, cost in admitted[i:]:
            total += cost
            assert total <= limit + (t2 - t1) / interval
