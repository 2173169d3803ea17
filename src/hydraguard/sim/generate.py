"""`simulate`: a scenario's whole span, day by day, into a directory of Parquet files.

Output layout (docs/simulator.md):

    DIR/events/day=YYYY-MM-DD/part-0.parquet   events, exactly events.schema.ARROW_SCHEMA, sorted by time
    DIR/registry/{orgs,accounts,keys}.parquet   the registry's records at the end of the span
    DIR/truth.parquet                            per account: population, campaign (or null), hard negative, bans
    DIR/prompts.parquet                          per distinct prompt_ref: kind, origin, statistics (ground truth)
    DIR/manifest.json                            scenario, seed, corpora and their SHA-256, counts, timings

Only one day of events is in memory at a time (plus the few requests of sessions that run past midnight).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pyarrow as pa

from hydraguard.events.schema import SCHEMA_VERSION
from hydraguard.sim import clients, corpora, timing
from hydraguard.sim.accounts import Registry
from hydraguard.sim.campaign import CampaignSim
from hydraguard.sim.legit import LegitSim
from hydraguard.sim.network import Internet
from hydraguard.sim.output import Block, Columns, write_day, write_parquet
from hydraguard.sim.prompts import Conversations, PromptBook
from hydraguard.sim.scenario import CampaignPopulation, LegitPopulation, Scenario
from hydraguard.sim.world import World

Progress = Callable[[int, int, int], None]  # (days done, days, events so far)


def secret_for(scenario: Scenario) -> bytes:
    """The key of the simulated registry's payment fingerprints: fixed by the scenario, never a real secret."""
    return hashlib.sha256(f"hydraguard-sim/{scenario.name}/{scenario.seed}".encode()).digest()


def build_world(scenario: Scenario, materialize_text: bool = False) -> tuple[World, list[LegitSim | CampaignSim]]:
    """Corpora, books, internet, registry and the populations, ready to generate days."""
    texts = corpora.load(scenario.corpora, scenario.seed)
    book = PromptBook(materialize_text)
    conversations = Conversations(texts.legit, scenario.seed)
    offset = book.add(conversations)
    profiles = clients.ProfileBook(models=list(scenario.models))
    for pop in scenario.populations:
        profiles.register(pop.sampling)
    world = World(
        scenario=scenario,
        texts=texts,
        book=book,
        profiles=profiles,
        internet=Internet(scenario.seed),
        registry=Registry(secret=secret_for(scenario)),
        conversations=conversations,
        conversations_offset=offset,
        user_agents=clients.user_agents()[0],
        model_speed=np.array([9.0 if "mini" in m else 22.0 for m in profiles.options["model"]]),
    )
    # legitimate populations first: proxy exits "shared with legit" are drawn from their lines
    sims: list[LegitSim | CampaignSim] = [
        LegitSim(world, p) for p in scenario.populations if isinstance(p, LegitPopulation)
    ]
    sims += [CampaignSim(world, p) for p in scenario.populations if isinstance(p, CampaignPopulation)]
    return world, sims


def columns_for(world: World, materialize_text: bool) -> Columns:
    """The converter from the world's event blocks to `RequestEvent` tables."""
    registry = world.registry
    return Columns(
        registry.account_ids,
        [registry.org_ids[o] for t in registry.tables for o in t.org.tolist()],
        [tier for t in registry.tables for tier in t.tier],
        registry.key_ids,
        world.user_agents,
        world.book,
        world.profiles,
        materialize_text,
    )


def simulate(
    scenario: Scenario,
    out: Path,
    *,
    materialize_text: bool = False,
    scenario_text: str | None = None,
    scenario_source: str | None = None,
    progress: Progress | None = None,
) -> dict[str, object]:
    """Write the scenario's event log, registry, ground truth and manifest under `out`; returns the manifest."""
    started = time.perf_counter()
    world, sims = build_world(scenario, materialize_text)
    registry = world.registry
    columns = columns_for(world, materialize_text)
    account_org = [registry.org_ids[o] for t in registry.tables for o in t.org.tolist()]
    _prepare(out)
    setup_s = time.perf_counter() - started

    counts = {
        "requests": np.zeros(registry.accounts, np.int64),
        "completion_tokens": np.zeros(registry.accounts, np.int64),
    }
    events_by_day: dict[str, int] = {}
    carry: list[Block] = []
    total = 0
    for day in range(scenario.days):
        day_start = world.start + day * timing.DAY
        block = Block.concat([sim.day(day) for sim in sims] + carry)
        block = block.take(np.argsort(block.time, kind="stable"))
        split = int(np.searchsorted(block.time, day_start + timing.DAY))
        carry = [block.slice(split, len(block))] if day + 1 < scenario.days else []
        today = block.slice(0, split)
        name = dt.datetime.fromtimestamp(day_start, dt.UTC).strftime("%Y-%m-%d")
        _write_day(columns, today, out / "events" / f"day={name}")
        counts["requests"] += np.bincount(today.account, minlength=registry.accounts)
        tokens = np.bincount(today.account, weights=np.maximum(today.completion, 0), minlength=registry.accounts)
        counts["completion_tokens"] += tokens.astype(np.int64)
        events_by_day[name] = len(today)
        total += len(today)
        if progress is not None:
            progress(day + 1, scenario.days, total)
    generate_s = time.perf_counter() - started - setup_s

    _write_registry(out, world, account_org)
    _write_truth(out, world, sims, account_org, counts)
    write_parquet(world.book.table(), str(out / "prompts.parquet"))
    manifest = _manifest(scenario, world, sims, counts, events_by_day, scenario_text, scenario_source)
    manifest["materialize_text"] = materialize_text
    manifest["timings"] = {
        "setup_s": round(setup_s, 3),
        "generate_s": round(generate_s, 3),
        "total_s": round(time.perf_counter() - started, 3),
        "events_per_s": round(total / max(generate_s, 1e-9)),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _write_day(columns: Columns, block: Block, partition: Path) -> None:
    """One day's partition."""
    partition.mkdir(parents=True)
    write_day(columns, block, str(partition / "part-0.parquet"))


def _prepare(out: Path) -> None:
    """An empty output directory: stale day partitions from an earlier run must not mix with this one."""
    for name in ("events", "registry"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("truth.parquet", "prompts.parquet", "manifest.json"):
        (out / name).unlink(missing_ok=True)
    (out / "registry").mkdir(parents=True)


def _nullable_times(values: np.ndarray) -> pa.Array:
    return pa.array(np.where(np.isfinite(values), values, 0.0), pa.float64(), mask=~np.isfinite(values))


def _write_registry(out: Path, world: World, account_org: list[str]) -> None:
    registry, end = world.registry, world.end
    tables = registry.tables
    created = np.concatenate([t.created for t in tables])
    banned = np.concatenate([t.banned for t in tables])
    orgs = pa.table(
        {
            "id": pa.array(registry.org_ids, pa.string()),
            "name": pa.array(registry.org_names, pa.string()),
            "tier": pa.array(registry.org_tiers, pa.string()),
            "created_at": pa.array(np.concatenate(registry.org_created), pa.float64()),
        }
    )
    accounts = pa.table(
        {
            "id": pa.array(registry.account_ids, pa.string()),
            "org_id": pa.array(account_org, pa.string()),
            "tier": pa.array([tier for t in tables for tier in t.tier], pa.string()),
            "status": pa.array(np.where(banned < end, "banned", "active").tolist(), pa.string()),
            "signup_at": pa.array(created, pa.float64()),
            "signup_ip": pa.array([ip for t in tables for ip in t.signup_ip], pa.string()),
            "email_domain": pa.array([d for t in tables for d in t.email_domain], pa.string()),
            "payment_fingerprint": pa.array([p for t in tables for p in t.payment_fingerprint], pa.string()),
            "signup_device": pa.array([d for t in tables for d in t.signup_device], pa.string()),
            "email_pattern": pa.array([p for t in tables for p in t.email_pattern], pa.string()),
            "limit_overrides": pa.nulls(registry.accounts, pa.string()),
        }
    )
    key_account = np.concatenate(registry.key_account)
    keys = pa.table(
        {
            "id": pa.array(registry.key_ids, pa.string()),
            "account_id": pa.array(registry.account_ids, pa.string()).take(pa.array(key_account)),
            "hint": pa.array(registry.key_hints, pa.string()),
            "created_at": pa.array(np.concatenate(registry.key_created), pa.float64()),
            "revoked_at": pa.nulls(len(registry.key_ids), pa.float64()),
            "expires_at": pa.nulls(len(registry.key_ids), pa.float64()),
        }
    )
    for name, table in (("orgs", orgs), ("accounts", accounts), ("keys", keys)):
        write_parquet(table, str(out / "registry" / f"{name}.parquet"))


def _write_truth(
    out: Path,
    world: World,
    sims: list[LegitSim | CampaignSim],
    account_org: list[str],
    counts: dict[str, np.ndarray],
) -> None:
    registry = world.registry
    population, role, campaign, hard, replaces = [], [], [], [], []
    for sim in sorted(sims, key=lambda s: s.table.first):
        pop, n = sim.pop, len(sim.table)
        population += [pop.name] * n
        role += [pop.role] * n
        campaign += [pop.campaign if isinstance(pop, CampaignPopulation) else None] * n
        hard += [bool(getattr(pop, "hard_negative", False))] * n
        replaces += [sim.table.ids[r] if r >= 0 else None for r in sim.table.replaces.tolist()]
    tables = registry.tables
    banned = np.concatenate([t.banned for t in tables])
    truth = pa.table(
        {
            "account_id": pa.array(registry.account_ids, pa.string()),
            "org_id": pa.array(account_org, pa.string()),
            "population": pa.array(population, pa.string()),
            "role": pa.array(role, pa.string()),
            "campaign_id": pa.array(campaign, pa.string()),
            "hard_negative": pa.array(hard, pa.bool_()),
            "signup_at": pa.array(np.concatenate([t.created for t in tables]), pa.float64()),
            "banned_at": _nullable_times(np.where(banned < world.end, banned, np.inf)),
            "replaces": pa.array(replaces, pa.string()),
            "requests": pa.array(counts["requests"]),
            "completion_tokens": pa.array(counts["completion_tokens"]),
        }
    )
    write_parquet(truth, str(out / "truth.parquet"))


def _manifest(
    scenario: Scenario,
    world: World,
    sims: list[LegitSim | CampaignSim],
    counts: dict[str, np.ndarray],
    events_by_day: dict[str, int],
    scenario_text: str | None,
    scenario_source: str | None,
) -> dict[str, object]:
    by_population = {}
    for sim in sims:
        rows = slice(sim.table.first, sim.table.first + len(sim.table))
        by_population[sim.pop.name] = {
            "role": sim.pop.role,
            "accounts": len(sim.table),
            "requests": int(counts["requests"][rows].sum()),
            "completion_tokens": int(counts["completion_tokens"][rows].sum()),
            "banned": int(np.sum(sim.table.banned < world.end)),
        }
    campaign = sum(v["requests"] for v in by_population.values() if v["role"] == "campaign")
    return {
        "scenario": scenario.name,
        "scenario_source": scenario_source,
        "scenario_sha256": hashlib.sha256(scenario_text.encode()).hexdigest() if scenario_text else None,
        "scenario_parsed": scenario.model_dump(mode="json"),
        "seed": scenario.seed,
        "start": scenario.start.isoformat(),
        "days": scenario.days,
        "corpora": {name: info.as_dict() for name, info in world.texts.info.items()},
        "builtin_prompts": any(info.builtin for info in world.texts.info.values()),
        "hydraguard_version": version("hydraguard"),
        "event_schema_version": SCHEMA_VERSION,
        "counts": {
            "events": int(sum(events_by_day.values())),
            "campaign_events": int(campaign),
            "legit_events": int(sum(events_by_day.values()) - campaign),
            "orgs": world.registry.orgs,
            "accounts": world.registry.accounts,
            "keys": len(world.registry.key_ids),
            "distinct_prompts": len(set(world.book.refs.values())),
            "sampling_profiles": len(world.profiles.profiles),
            "populations": by_population,
            "events_by_day": events_by_day,
        },
    }
