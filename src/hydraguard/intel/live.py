"""The gateway's copy of the indicator set: an `IntelIndex` rebuilt in the background when the store changes.

The request path reads one reference: no I/O, no lock, and next to nothing while no indicators are loaded. A
background task checks the store's change counter every `refresh_interval` seconds and, when it moved, builds a
new index in a worker thread and swaps it in whole, so requests never wait for a rebuild.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass

import anyio

from hydraguard.intel.asn import AsnTable
from hydraguard.intel.index import IntelIndex
from hydraguard.intel.indicators import Indicator, IndicatorKind, key_fingerprint
from hydraguard.intel.store import IntelStore

log = logging.getLogger(__name__)
_FINGERPRINT_CACHE = 100_000


@dataclass(frozen=True, slots=True)
class IntelMatch:
    labels: tuple[str, ...]  # `kind:indicator_id`, as `RequestEvent.intel_matches` records them
    block: bool  # whether the policy refuses the request for one of them

    @property
    def kinds(self) -> list[str]:
        return [label.partition(":")[0] for label in self.labels]


@dataclass(frozen=True, slots=True)
class _Loaded:
    index: IntelIndex
    blocking: frozenset[str]  # labels of the indicators whose match refuses a request


class LiveIntel:
    def __init__(
        self,
        store: IntelStore,
        *,
        asn_table: AsnTable | None = None,
        refresh_interval: float = 5.0,
        block_kinds: Collection[IndicatorKind | str] = (),
        block_min_confidence: int = 0,
    ) -> None:
        self.store = store
        self.asn_table = asn_table
        self.refresh_interval = refresh_interval
        self.block_kinds = frozenset(IndicatorKind(k) for k in block_kinds)
        self.block_min_confidence = block_min_confidence
        self.refresh_failures = 0
        self._loaded: _Loaded | None = None  # None: nothing to match
        self._version: int | None = None
        self._task: asyncio.Task[None] | None = None
        # presented key -> its SHA-256: a key comes back request after request (the registry caches its HMAC alike)
        self._fingerprints: dict[str, str] = {}

    @property
    def loaded(self) -> int:
        """How many indicators the current index holds."""
        return 0 if self._loaded is None else len(self._loaded.index)

    # -- the request path ------------------------------------------------------------------------------
    def match(self, ip: str | None, user_agent: str | None, api_key: str | None, now: float) -> IntelMatch | None:
        loaded = self._loaded
        if loaded is None:
            return None
        index = loaded.index
        fingerprint = None
        if api_key and index.matches_key_fingerprints:
            fingerprint = self._fingerprints.get(api_key)
            if fingerprint is None:
                if len(self._fingerprints) >= _FINGERPRINT_CACHE:
                    self._fingerprints.clear()
                fingerprint = self._fingerprints[api_key] = key_fingerprint(api_key)
        labels = index.match(ip, user_agent, fingerprint, now)
        if not labels:
            return None
        return IntelMatch(labels, not loaded.blocking.isdisjoint(labels))

    # -- keeping up with the store ---------------------------------------------------------------------
    def refresh(self, now: float | None = None) -> bool:
        """Rebuild the index if the store changed since the last build; whether it did. Blocking: run it in a
        thread (as the background task does), never on the event loop."""
        version = self.store.version()  # read before the indicators: a change in between only rebuilds again
        if version == self._version:
            return False
        blocking: set[str] = set()

        def live() -> Iterator[Indicator]:
            for indicator in self.store.iter(active_at=time.time() if now is None else now):
                if indicator.kind in self.block_kinds and indicator.confidence >= self.block_min_confidence:
                    blocking.add(indicator.label)
                yield indicator

        index = IntelIndex(live(), asn_table=self.asn_table)
        self._loaded = _Loaded(index, frozenset(blocking)) if len(index) else None
        self._version = version
        log.info("threat-intel index loaded: %d indicators (version %d)", len(index), version)
        return True

    async def start(self) -> None:
        await self._refresh_in_thread()
        self._task = asyncio.create_task(self._follow())

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            await self._refresh_in_thread()

    async def _refresh_in_thread(self) -> None:
        try:
            await anyio.to_thread.run_sync(self.refresh)
        except Exception:  # the database may be away for a while: keep matching against the last good index
            self.refresh_failures += 1
            log.exception("threat-intel refresh failed; keeping the last loaded indicators")
