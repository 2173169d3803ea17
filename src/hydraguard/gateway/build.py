"""Assemble a gateway from settings: the embedded defaults, or Redis-backed shared state."""

from __future__ import annotations

from hydraguard.accounts.registry import Registry
from hydraguard.config import Settings
from hydraguard.decide.store import DecisionStore, RedisDecisionStore, SqlDecisionStore
from hydraguard.detect.request import fill_fingerprints
from hydraguard.events.log import EventLog
from hydraguard.gateway.app import Gateway
from hydraguard.intel.asn import AsnTable
from hydraguard.intel.live import LiveIntel
from hydraguard.intel.store import IntelStore
from hydraguard.limits.base import Limiter
from hydraguard.limits.memory import MemoryLimiter
from hydraguard.limits.redis import RedisLimiter

DAY = 86_400.0


def open_registry(settings: Settings) -> Registry:
    return Registry(settings.registry.url, settings.secret_bytes(), upgrade_schema=settings.registry.auto_upgrade)


def build_limiter(settings: Settings) -> Limiter:
    backend = settings.backend
    if backend.kind == "redis":
        return RedisLimiter.from_url(backend.redis_url, timeout=backend.redis_timeout, prefix=backend.redis_prefix)
    return MemoryLimiter(max_keys=backend.memory_max_keys)


def build_decision_store(settings: Settings, registry: Registry) -> DecisionStore:
    backend = settings.backend
    if backend.kind == "redis":
        return RedisDecisionStore.from_url(
            backend.redis_url,
            timeout=backend.redis_timeout,
            prefix=backend.redis_prefix,
            refresh_interval=backend.decision_refresh_interval,
        )
    return SqlDecisionStore(registry.engine, refresh_interval=backend.decision_refresh_interval)


def build_event_log(settings: Settings) -> EventLog:
    events = settings.events
    return EventLog(
        events.dir,
        flush_interval=events.flush_interval,
        prompt_text_retention=events.prompt_text_retention_days * DAY if events.keep_prompt_text else None,
        enrich=fill_fingerprints,
    )


def build_intel(settings: Settings, registry: Registry) -> LiveIntel:
    """The indicator set of the registry database, as the gateway matches it (AsnTableError for a bad table)."""
    intel = settings.intel
    return LiveIntel(
        IntelStore(registry.engine),
        asn_table=AsnTable.from_csv(intel.asn_table) if intel.asn_table else None,
        refresh_interval=intel.refresh_interval,
        block_kinds=intel.block_on_match,
        block_min_confidence=intel.block_min_confidence,
    )


def build_gateway(settings: Settings) -> Gateway:
    registry = open_registry(settings)
    return Gateway(
        settings,
        registry=registry,
        limiter=build_limiter(settings),
        decisions=build_decision_store(settings, registry),
        events=build_event_log(settings),
        intel=build_intel(settings, registry),
    )
