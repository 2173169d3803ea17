"""Streaming detection: follow the gateway's event log, detect, keep campaigns, write decisions.

The same engine as batch analysis (`detect/analyze.py`), fed as the log grows instead of all at once. Each step
reads the events the gateway has flushed since the last step, folds them in, runs the analyses that fell due
(event time, or the wall clock when traffic stops), records the campaigns and hands the detections to the policy,
which writes decisions to the store the gateway reads. It runs beside the gateway (`hydraguard detect --follow`,
or `hydraguard serve --detect`, which starts it as a child process), never on the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from hydraguard.accounts.models import Account
from hydraguard.accounts.risk import SignupLinks, signup_links
from hydraguard.config import Settings
from hydraguard.decide.policy import Policy
from hydraguard.decide.store import DecisionStore
from hydraguard.detect.campaigns import CampaignStore
from hydraguard.detect.engine import Engine, EngineSettings, registry_table
from hydraguard.detect.rules import RuleSet
from hydraguard.events.log import segments
from hydraguard.events.schema import ARROW_SCHEMA
from hydraguard.intel.store import IntelStore

log = logging.getLogger(__name__)


class EventFollower:
    """The events of an event-log directory that have not been read yet, as segments grow and new ones appear.

    A segment is an Arrow IPC stream the gateway appends whole batches to; a batch still being written when we
    read is not complete yet and is read on a later poll."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._read: dict[Path, int] = {}  # segment -> batches already read

    def poll(self) -> pa.Table:
        batches: list[pa.RecordBatch] = []
        for path in segments(self.directory):
            done = self._read.get(path, 0)
            seen = 0
            try:
                with pa.memory_map(str(path)) as source:
                    for batch in pa.ipc.open_stream(source):
                        seen += 1
                        if seen > done:
                            batches.append(batch)
            except (pa.ArrowInvalid, OSError):
                pass  # an empty new segment, or a batch being written: the complete ones are in `batches`
            self._read[path] = seen
        table = pa.Table.from_batches(batches, schema=ARROW_SCHEMA)
        return table.sort_by("time") if table.num_rows else table


@dataclass(frozen=True)
class Step:
    events: int
    detections: int
    campaigns: int
    decisions: int


class DetectionWorker:
    def __init__(
        self,
        engine: Engine,
        follower: EventFollower,
        campaigns: CampaignStore,
        policy: Policy,
        decisions: DecisionStore,
        accounts: Callable[[], Iterable[Account]],
        on_campaigns: Callable[[list[str]], Awaitable[object]] | None = None,
        intel: IntelStore | None = None,
        signups: Callable[[list[str]], Mapping[str, SignupLinks]] | None = None,
    ) -> None:
        self.engine = engine
        self.follower = follower
        self.campaigns = campaigns
        self.policy = policy
        self.decisions = decisions
        self._accounts = accounts
        self._signups = signups  # what the given accounts' signups stored: read for new accounts only
        self.on_campaigns = on_campaigns  # given the campaigns each step touched (alert webhooks)
        self.intel = intel  # shared template signatures, matched by the engine
        self._intel_version: int | None = None
        self._known: set[str] = set()

    def _refresh_intel(self, now: float) -> None:
        if self.intel is None:
            return
        version = self.intel.version()
        if version != self._intel_version:
            index = self.intel.index(now=now)
            self.engine.use_intel(index if len(index) else None)
            self._intel_version = version

    def _load_new_accounts(self) -> None:
        new = [a for a in self._accounts() if a.id not in self._known]
        if new:
            links = self._signups([a.id for a in new]) if self._signups else None
            self.engine.load_registry(registry_table(new, links))
            self._known.update(a.id for a in new)

    async def step(self, now: float | None = None) -> Step:
        now = time.time() if now is None else now
        self._load_new_accounts()
        self._refresh_intel(now)
        batch = self.follower.poll()
        detections = self.engine.observe(batch) if batch.num_rows else []
        detections += self.engine.advance(now)
        touched = self.campaigns.record(detections)
        written = await self.policy.enforce(self.decisions, detections, now)
        if self.on_campaigns is not None:
            await self.on_campaigns(touched)
        if detections:
            log.info(
                "detection step: %d events, %d detections, %d campaigns, %d decisions",
                batch.num_rows,
                len(detections),
                len(touched),
                written,
            )
        return Step(batch.num_rows, len(detections), len(touched), written)

    async def run(self, poll_interval: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.step()
            except Exception:  # keep following: a bad step must not end detection for the whole deployment
                log.exception("detection step failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll_interval)


class StopSignal(Protocol):
    """Set from outside the worker's event loop: a `threading.Event`, or a `multiprocessing` one from a parent."""

    def is_set(self) -> bool: ...


async def _relay(signal: StopSignal, stop: asyncio.Event, check_interval: float = 0.2) -> None:
    while not signal.is_set():
        await asyncio.sleep(check_interval)
    stop.set()


def follow(
    settings: Settings,
    *,
    once: bool = False,
    poll_interval: float = 5.0,
    engine_settings: EngineSettings | None = None,
    rules: RuleSet | None = None,
    stop_signal: StopSignal | None = None,
) -> Step:
    """Run the worker on the configured event log, registry and decision store: one pass over what the log holds
    (`once`), or following it until interrupted or `stop_signal` is set (checked between steps). Returns the
    (last) step's counts."""
    from hydraguard.gateway.build import build_decision_store, open_registry
    from hydraguard.intel.alerts import alerter_from_settings

    registry = open_registry(settings)
    decisions = build_decision_store(settings, registry)
    campaigns = CampaignStore(registry.engine)
    worker = DetectionWorker(
        Engine(rules, engine_settings),
        EventFollower(settings.events.dir),
        campaigns,
        Policy(dismissed=campaigns.dismissed),
        decisions,
        registry.list_accounts,
        on_campaigns=alerter_from_settings(settings.alerts, campaigns, registry.engine),
        intel=IntelStore(registry.engine),
        signups=partial(signup_links, registry.engine),
    )

    async def main() -> Step:
        await decisions.start()
        try:
            if once:
                return await worker.step()
            stop = asyncio.Event()
            relay = asyncio.create_task(_relay(stop_signal, stop)) if stop_signal is not None else None
            await worker.run(poll_interval, stop)
            if relay is not None:
                await relay
            return Step(0, 0, 0, 0)
        finally:
            await decisions.close()

    try:
        return asyncio.run(main())
    finally:
        registry.close()
