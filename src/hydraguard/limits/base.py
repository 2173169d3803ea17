"""The limiter contract shared by the memory and Redis backends (one test suite runs against both)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from hydraguard.limits.gcra import Quota


class LimiterUnavailable(Exception):
    """The backend could not be reached in time; the gateway applies its fail-open/closed policy."""


class Slot(NamedTuple):
    """One concurrency slot under `key`, of which at most `limit` may be held at once."""

    key: str
    limit: int
    name: str = ""


class QuotaState(NamedTuple):
    name: str
    limit: int
    remaining: int
    reset_after: float


@dataclass(slots=True)
class Verdict:
    allowed: bool
    states: tuple[QuotaState, ...] = ()
    denied_by: str | None = None  # the quota or slot name that refused
    retry_after: float = 0.0
    lease: str | None = None  # identifies held concurrency slots, for release()
    slots: tuple[Slot, ...] = field(default=())


class Limiter(Protocol):
    async def acquire(self, quotas: Sequence[Quota], slots: Sequence[Slot], lease: str) -> Verdict:
        """Check every quota and slot; charge all of them, or none when any one refuses."""
        ...

    async def adjust(self, quotas: Sequence[Quota]) -> None:
        """Charge each quota's `cost` more (negative: refund) on top of an earlier admission."""
        ...

    async def release(self, slots: Sequence[Slot], lease: str) -> None:
        """Give back the concurrency slots taken under `lease`."""
        ...

    async def held(self, key: str) -> int:
        """How many concurrency slots are held under `key`."""
        ...

    async def close(self) -> None: ...
