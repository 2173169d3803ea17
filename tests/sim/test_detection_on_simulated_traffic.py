"""hydraguard's detector and `hydraguard analyze` on six days of `seed-hydra-small` (the session's `small_run`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from typer.testing import CliRunner

from hydraguard.cli import app
from hydraguard.detect import analyze as analysis
from hydraguard.detect.engine import COLUMNS
from hydraguard.sim import detector as detectors
from hydraguard.sim import evaluate as evaluation
from hydraguard.sim.scenario import Scenario

from .conftest import read, read_events


def test_hydraguard_finds_the_campaign_that_rate_limits_miss(small_run: tuple[Scenario, Path, dict[str, Any]]) -> None:
    _, out, _ = small_run
    ours = evaluation.evaluate_run(detectors.HydraGuard(), out)
    baseline = evaluation.evaluate_run(detectors.RateLimits(), out)
    assert ours["campaigns_detected"] == len(ours["campaigns"]) >= 1
    assert ours["recall"] >= 0.9 > baseline["recall"]
    assert ours["fpr"] <= 0.05
    assert ours["campaign"]["requests_served_share"] < 0.1 < baseline["campaign"]["requests_served_share"]


def test_the_batch_detector_links_daily_and_still_finds_the_campaign(
    small_run: tuple[Scenario, Path, dict[str, Any]],
) -> None:
    _, out, _ = small_run
    batch = detectors.BUILTIN["hydraguard-batch"]()
    assert batch.name == "hydraguard-batch"
    assert batch.engine.settings.linkage_interval == 86_400.0 > detectors.HydraGuard().engine.settings.linkage_interval
    assert batch.engine.settings.linkage_lag == 43_200.0 > detectors.HydraGuard().engine.settings.linkage_lag
    scored = evaluation.evaluate_run(batch, out)
    assert scored["campaigns_detected"] >= 1 and scored["recall"] >= 0.9 and scored["fpr"] <= 0.05


def test_analyze_writes_campaigns_with_their_accounts_and_evidence(
    small_run: tuple[Scenario, Path, dict[str, Any]], tmp_path: Path
) -> None:
    _, out, _ = small_run
    result = CliRunner().invoke(app, ["analyze", str(out), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    campaigns = json.loads((tmp_path / "campaigns.json").read_text())
    clusters = [c for c in campaigns if c["level"] == "cluster" and c["enforcing"]]
    assert clusters and all(c["evidence"] and c["rules"] for c in clusters)
    truth = read(out, "truth.parquet")
    campaign_accounts = set(truth.filter(pc.is_valid(truth["campaign_id"]))["account_id"].to_pylist())
    found = {a for c in clusters for a in c["accounts"]}
    assert len(found & campaign_accounts) >= 0.8 * len(campaign_accounts)
    report = (tmp_path / "report.md").read_text()
    assert "| Campaign | Accounts |" in report
    # each cluster carries what its members asked most, and the report shows it
    largest = max(clusters, key=lambda c: len(c["accounts"]))
    assert all(c["templates"] for c in clusters) and f"`{largest['templates'][0]['template_hash']}`" in report
    events = read_events(out, ["account_id", "template_hash", "request_id"])
    theirs = events.filter(pc.is_in(events["account_id"], pa.array(largest["accounts"])))
    assert {t["template_hash"] for t in largest["templates"]} <= set(theirs["template_hash"].to_pylist())
    assert {t["example_request_id"] for t in largest["templates"]} <= set(theirs["request_id"].to_pylist())


def test_analyze_refuses_a_missing_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["analyze", str(tmp_path / "nope"), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and "not a directory" in result.output


def test_analysis_reads_the_engines_columns_in_time_order(small_run: tuple[Scenario, Path, dict[str, Any]]) -> None:
    _, out, _ = small_run
    batches = list(analysis.simulated_batches(out))
    assert all(batch.schema.names == COLUMNS for batch in batches)
    times = np.concatenate([batch.column("time").to_numpy() for batch in batches])
    assert len(times) == read_events(out, ["time"]).num_rows
    assert (np.diff(times) >= 0).all()
