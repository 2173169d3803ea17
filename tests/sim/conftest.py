"""Simulator fixtures: short versions of the shipped scenarios, simulated once per test session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from hydraguard.sim import generate
from hydraguard.sim import scenario as scenarios

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"the shared prompt corpora are not at {SHARED_DATA} (../shared/data)"
)


def shortened(name: str, days: int, **changes: Any) -> scenarios.Scenario:
    """A shipped scenario cut to its first `days` days (campaign phases clipped to the span, campaign
    populations that would not have started yet left out)."""
    data = scenarios.load(name)[0].model_dump(mode="json")
    data.update(days=days, **changes)
    for pop in data["populations"]:
        if pop["role"] == "campaign":
            phases = [p for p in pop["activity"]["phases"] if p["start_day"] < days]
            for p in phases:
                p["end_day"] = min(p["end_day"] or days, days)
            pop["activity"]["phases"] = phases
    data["populations"] = [p for p in data["populations"] if p["role"] == "legit" or p["activity"]["phases"]]
    return scenarios.Scenario.model_validate(data)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[scenarios.Scenario, Path, dict[str, Any]]:
    scenario = shortened("seed-hydra-small", 6)
    out = tmp_path_factory.mktemp("seed-hydra-small")
    manifest = generate.simulate(scenario, out)
    return scenario, out, manifest


def read_events(out: Path, columns: list[str] | None = None) -> pa.Table:
    files = sorted((out / "events").glob("day=*/part-0.parquet"))
    return ds.dataset([str(f) for f in files], format="parquet").to_table(columns=columns)


def read(out: Path, name: str) -> pa.Table:
    return pq.read_table(out / name)
