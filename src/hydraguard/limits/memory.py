"""In-process limiter: exact for one gateway process, bounded in memory."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence

from hydraguard.limits.base import QuotaState, Slot, Verdict
from hydraguard.limits.gcra import Quota, adjusted_tat, evaluate

_new_state = tuple.__new__  # a dozen states per request: skips NamedTuple's Python-level __new__


class MemoryLimiter:
    """GCRA state in a dict kept in update order (an entry is re-inserted when it changes).

    Past `max_keys` entries, the least recently charged hundredth is evicted in one short step. An
    entry not charged for the longest time has the oldest TAT, so it is the closest to a full bucket
    (most often already full): eviction can only make a limit more lenient, never stricter, and it
    never stalls the event loop for long (about 20,000 deletions at the default size).
    """

    def __init__(self, *, max_keys: int = 2_000_000, clock: Callable[[], float] = time.time) -> None:
        self._tat: dict[str, float] = {}
        self._held: dict[str, set[str]] = {}
        self.max_keys = max_keys
        self._evict_batch = max(1, max_keys // 100)
        self._clock = clock
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._tat)

    async def acquire(self, quotas: Sequence[Quota], slots: Sequence[Slot], lease: str) -> Verdict:
        return self.acquire_sync(quotas, slots, lease)

    def acquire_sync(self, quotas: Sequence[Quota], slots: Sequence[Slot], lease: str) -> Verdict:
        now = self._clock()
        tats = self._tat
        states: list[QuotaState] = []
        new_tats: list[float] = []
        for quota in quotas:
            allowed, new_tat, remaining, reset_after, retry_after = evaluate(quota, tats.get(quota.key), now)
            state = _new_state(QuotaState, (quota.name, quota.limit, remaining, reset_after))
            if not allowed:
                return Verdict(False, (state,), denied_by=quota.name, retry_after=retry_after)
            states.append(state)
            new_tats.append(new_tat)
        held = self._held
        for slot in slots:
            if len(held.get(slot.key, ())) >= slot.limit:
                return Verdict(False, tuple(states), denied_by=slot.name, retry_after=1.0)
        for quota, tat in zip(quotas, new_tats, strict=True):
            tats.pop(quota.key, None)
            tats[quota.key] = tat
        for slot in slots:
            held.setdefault(slot.key, set()).add(lease)
        if len(tats) > self.max_keys:
            self._evict()
        return Verdict(True, tuple(states), lease=lease, slots=tuple(slots))

    async def adjust(self, quotas: Sequence[Quota]) -> None:
        now = self._clock()
        tats = self._tat
        for quota in quotas:
            tat = adjusted_tat(quota, tats.pop(quota.key, None), now, quota.cost)
            if tat is not None:
                tats[quota.key] = tat

    async def release(self, slots: Sequence[Slot], lease: str) -> None:
        for slot in slots:
            held = self._held.get(slot.key)
            if held is not None:
                held.discard(lease)
                if not held:
                    del self._held[slot.key]

    async def held(self, key: str) -> int:
        return len(self._held.get(key, ()))

    def _evict(self) -> None:
        stale = list(itertools.islice(self._tat, self._evict_batch))
        for key in stale:
            del self._tat[key]
        self.evictions += len(stale)

    async def close(self) -> None:
        return None
