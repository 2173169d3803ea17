"""The generic cell rate algorithm (GCRA), as pure functions over a theoretical arrival time (TAT).

A quota admits `limit` units per `period` seconds with a burst of the whole `limit`: the emission
interval is `period / limit` and the tolerance is `period`. State per key is one float, the TAT;
a key whose TAT is in the past holds no information (a full bucket) and may be forgotten.
Both limiter backends (memory and the Redis Lua script) implement exactly these formulas.
"""

from __future__ import annotations

import math
from typing import NamedTuple


# NamedTuples: dozens of these are built per request, and tuples are the cheapest immutable records.
class Quota(NamedTuple):
    """`cost` units against `limit` per `period` seconds, under the state key `key`."""

    key: str
    limit: int
    period: float
    cost: int
    name: str = ""  # what the quota is, e.g. "tpm:account"; used in refusal reasons and headers

    @property
    def interval(self) -> float:
        return self.period / self.limit


# Float spacing at Unix-time magnitudes is ~2.4e-7 s; comparisons allow a microsecond so that a
# burst of exactly `limit` is admitted whatever the rounding. The Redis script uses the same value.
_TOLERANCE = 1e-6

# (allowed, new TAT, remaining, seconds until full again, seconds until admitted or 0): a plain tuple,
# built once per quota per request
Outcome = tuple[bool, float, int, float, float]


def evaluate(quota: Quota, tat: float | None, now: float) -> Outcome:
    period = quota.period
    interval = period / quota.limit
    base = now if tat is None or tat < now else tat
    new_tat = base + quota.cost * interval
    allow_at = new_tat - period
    if allow_at <= now + _TOLERANCE:
        remaining = math.floor((period - (new_tat - now)) / interval + _TOLERANCE)
        return (True, new_tat, remaining if remaining > 0 else 0, new_tat - now, 0.0)
    remaining = math.floor((period - (base - now)) / interval + _TOLERANCE)
    retry = math.inf if quota.cost > quota.limit else allow_at - now
    return (False, base, remaining if remaining > 0 else 0, base - now, retry)


def adjusted_tat(quota: Quota, tat: float | None, now: float, delta: int) -> float | None:
    """TAT after charging `delta` more units (negative: a refund) to an earlier admission."""
    if tat is None or tat < now:
        tat = now
    new_tat = tat + delta * quota.interval
    return None if new_tat <= now else new_tat
