"""In-process limiter: exact for one gateway process, bounded in memory."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from hydraguard.limits.base import QuotaState, Slot, Verdict
from hydraguard.limits.gcra import Quota, adjusted_tat, evaluate


class MemoryLimiter:
    """GCRA state in a dict. Expired entries (full buckets) are swept; past `max_keys` the entries
    closest to full are evicted first, which can only ever make a limit more lenient, never stricter."""

    def __init__(self, *, max_keys: int = 2_000_000, clock: Callable[[], float] = time.time) -> None:
        self._tat: dict[str, float] = {}
        self._held: dict[str, set[str]] = {}
        self.max_keys = max_keys
        self._clock = clock
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._tat)

    async def acquire(self, quotas: Sequence[Quota], slots: Sequence[Slot], lease: str) -> Verdict:
        return self.acquire_sync(quotas, slots, lease)

    def acquire_sync(self, quotas: Sequence[Quota], slots: Sequence[Slot], lease: str) -> Verdict:
        now = self._clock()
        states: list[QuotaState] = []
        new_tats: list[float] = []
        for quota in quotas:
            outcome = evaluate(quota, self._tat.get(quota.key), now)
            if not outcome.allowed:
                return Verdict(
                    False,
                    (QuotaState(quota.name, quota.limit, outcome.remaining, outcome.reset_after),),
                    denied_by=quota.name,
                    retry_after=outcome.retry_after,
                )
            states.append(QuotaState(quota.name, quota.limit, outcome.remaining, outcome.reset_after))
            new_tats.append(outcome.new_tat)
        for slot in slots:
            if len(self._held.get(slot.key, ())) >= slot.limit:
                return Verdict(False, tuple(states), denied_by=slot.name, retry_after=1.0)
        for quota, tat in zip(quotas, new_tats, strict=True):
            self._tat[quota.key] = tat
        for slot in slots:
            self._held.setdefault(slot.key, set()).add(lease)
        if len(self._tat) > self.max_keys:
            self._shrink(now)
        return Verdict(True, tuple(states), lease=lease, slots=tuple(slots))

    async def adjust(self, quotas: Sequence[Quota]) -> None:
        now = self._clock()
        for quota in quotas:
            tat = adjusted_tat(quota, self._tat.get(quota.key), now, quota.cost)
            if tat is None:
                self._tat.pop(quota.key, None)
            else:
                self._tat[quota.key] = tat

    async def release(self, slots: Sequence[Slot], lease: str) -> None:
        for slot in slots:
            held = self._held.get(slot.key)
            if held is not None:
                held.discard(lease)
                if not held:
                    del self._held[slot.key]

    async def held(self, key: str) -> int:
        return len(self._held.get(key, ()))

    def _shrink(self, now: float) -> None:
        self._tat = {k: v for k, v in self._tat.items() if v > now}
        excess = len(self._tat) - int(self.max_keys * 0.9)
        if excess > 0:
            for key in sorted(self._tat, key=self._tat.__getitem__)[:excess]:
                del self._tat[key]
            self.evictions += excess

    async def close(self) -> None:
        return None
