"""The detector interface the evaluation harness scores (docs/simulator.md, "Evaluation").

A detector sees what a provider sees: the registry tables once, then the event log as time-ordered batches of
the one `RequestEvent` Arrow schema. It returns flags: an account, the time it was flagged and why. It never
sees ground truth (`truth.parquet`, `prompts.parquet`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import pyarrow as pa

from hydraguard.config import Limits, _default_tiers
from hydraguard.detect.engine import Engine, EngineSettings, batch_settings


@dataclass(frozen=True, slots=True)
class Flag:
    """An account flagged at `flagged_at` (unix seconds): its requests from then on would be refused."""

    account_id: str
    flagged_at: float
    score: float = 1.0
    reason: str = ""


@runtime_checkable
class Detector(Protocol):
    """Events in, flags out.

    The harness calls `start` once with the registry tables (`orgs`, `accounts`, `keys`, as in
    `DIR/registry/*.parquet`), then `observe` with every batch of events in time order (each a
    `pa.RecordBatch` with `events.schema.ARROW_SCHEMA`). `observe` returns the flags it raises on that batch;
    a flag's `flagged_at` must not be later than the last event it has seen. Only an account's earliest flag
    counts.
    """

    name: str

    def start(self, registry: dict[str, pa.Table]) -> None: ...

    def observe(self, batch: pa.RecordBatch) -> list[Flag]: ...


class NoDetector:
    """Flags nothing: the world without defence."""

    name = "none"

    def start(self, registry: dict[str, pa.Table]) -> None:
        pass

    def observe(self, batch: pa.RecordBatch) -> list[Flag]:
        return []


class RateLimits:
    """Per-account rate limits only: what per-account controls see.

    Flags an account at the first request that takes it over its tier's per-account `rpm` (requests in one
    UTC minute, every request counted) or `tpd` (prompt + completion tokens of served requests in one UTC
    day). The limits are the product's defaults (`config._default_tiers`, the same as `starter.toml`), fixed
    before any scenario was seen; an unknown tier gets the `free` limits. Fixed windows approximate the
    gateway's GCRA.
    """

    name = "rate-limits"

    def __init__(self, tiers: dict[str, Limits] | None = None) -> None:
        self.tiers = tiers or {name: tier.account for name, tier in _default_tiers().items()}
        self._minute: dict[str, tuple[int, int]] = {}
        self._day: dict[str, tuple[int, int]] = {}
        self._flagged: set[str] = set()

    def start(self, registry: dict[str, pa.Table]) -> None:
        self._minute.clear()
        self._day.clear()
        self._flagged.clear()

    def observe(self, batch: pa.RecordBatch) -> list[Flag]:
        flags: list[Flag] = []
        columns = batch.select(["time", "account_id", "tier", "status", "prompt_tokens", "completion_tokens"])
        data = columns.to_pydict()
        free = self.tiers.get("free", Limits())
        inf = math.inf
        for time, account, tier, status, prompt, completion in zip(*data.values(), strict=True):
            if account is None or account in self._flagged:
                continue
            limits = self.tiers.get(tier, free)
            minute, day = int(time // 60), int(time // 86_400)
            m, count = self._minute.get(account, (minute, 0))
            count = count + 1 if m == minute else 1
            self._minute[account] = (minute, count)
            d, tokens = self._day.get(account, (day, 0))
            used = ((prompt or 0) + (completion or 0)) if status == 200 else 0
            tokens = tokens + used if d == day else used
            self._day[account] = (day, tokens)
            reason = ""
            if count > (limits.rpm or inf):
                reason = f"rpm>{limits.rpm}"
            elif tokens > (limits.tpd or inf):
                reason = f"tpd>{limits.tpd}"
            if reason:
                self._flagged.add(account)
                flags.append(Flag(account, time, 1.0, f"{tier}:{reason}"))
        return flags


class HydraGuard:
    """hydraguard's detection engine (`detect.engine.Engine`) with its default rule pack: an account is flagged
    when a non-shadow rule with an enforcing action (throttle, degrade, challenge, block) covers it."""

    name = "hydraguard"

    def __init__(self, settings: EngineSettings | None = None, name: str | None = None) -> None:
        self.settings = settings
        if name:
            self.name = name
        self.engine = Engine(settings=settings)
        self._flagged: set[str] = set()

    def start(self, registry: dict[str, pa.Table]) -> None:
        self.engine = Engine(settings=self.settings)
        self._flagged.clear()
        self.engine.load_registry(registry["accounts"])

    def observe(self, batch: pa.RecordBatch) -> list[Flag]:
        flags = []
        for detection in self.engine.observe(batch):
            if not detection.enforcing:
                continue
            reason = ",".join(hit.rule_id for hit in detection.hits)
            for account in detection.accounts:
                if account not in self._flagged:
                    self._flagged.add(account)
                    flags.append(Flag(account, detection.at, detection.score, f"{detection.subject}:{reason}"))
        return flags


def ablation(family: str) -> HydraGuard:
    """hydraguard without one family of evidence (`payment`, `ip`, `identity`, `templates`, `timing`)."""
    return HydraGuard(EngineSettings(families_off=frozenset({family})), name=f"hydraguard-no-{family}")


def batch() -> HydraGuard:
    """hydraguard as `hydraguard analyze` runs it: a linkage a day of event time (`detect.batch_linkage_interval`)
    instead of every 6 hours."""
    return HydraGuard(batch_settings(), name="hydraguard-batch")


def prada() -> Detector:
    """PRADA (sim/baselines.py; imported on use: it loads scipy and the embedding model)."""
    from hydraguard.sim.baselines import Prada

    return Prada()


def mmd() -> Detector:
    """The benign-calibrated MMD window detector (sim/baselines.py)."""
    from hydraguard.sim.baselines import Mmd

    return Mmd()


ABLATIONS = ("payment", "ip", "identity", "templates", "timing", "intel", "client")
BUILTIN: dict[str, Callable[[], Detector]] = {
    "rate-limits": RateLimits,
    "none": NoDetector,
    "hydraguard": HydraGuard,
    "hydraguard-batch": batch,
    "prada": prada,
    "mmd": mmd,
    **{f"hydraguard-no-{family}": functools.partial(ablation, family) for family in ABLATIONS},
}
