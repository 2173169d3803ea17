"""`hydraguard simulate`: a shipped scenario by name, within seconds."""

from __future__ import annotations

import time
from pathlib import Path

from typer.testing import CliRunner

from hydraguard.cli import app
from tests.sim.conftest import read_events

runner = CliRunner()


def test_simulate_seed_hydra_small(tmp_path: Path) -> None:
    started = time.monotonic()
    result = runner.invoke(app, ["simulate", "seed-hydra-small", "--out", str(tmp_path)])
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert "seed-hydra-small:" in result.output and "campaign)" in result.output
    assert "legit prompts:" in result.output
    assert elapsed < 60
    assert len(list((tmp_path / "events").iterdir())) == 44
    assert read_events(tmp_path, ["time"]).num_rows > 500_000


def test_simulate_reports_bad_scenarios(tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", "no-such-scenario", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "no scenario 'no-such-scenario'" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nseed: 1\nstart: 2026-04-22T00:00:00Z\ndays: 1\npopulations: []\n")
    result = runner.invoke(app, ["simulate", str(bad), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "populations: List should have at least 1 item" in result.output
