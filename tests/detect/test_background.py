"""Streaming detection in the background of the gateway: a supervised child process that stops with its parent."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from hydraguard import config as config_module
from hydraguard.decide.model import DecisionType
from hydraguard.decide.store import SqlDecisionStore
from hydraguard.detect.background import BackgroundDetector, engine_settings
from hydraguard.detect.campaigns import CampaignStore
from hydraguard.gateway.build import open_registry
from hydraguard.testing.servers import free_port
from tests.detect.helpers import seed_harvester

HOUR = 3600.0
FAST = {"poll_interval": 0.2, "analysis_interval": 600.0, "linkage_interval": 3600.0}


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> config_module.Settings:
    """A starter config in a temporary directory, with fast detection intervals."""
    for name in list(os.environ):
        if name.startswith("HYDRAGUARD_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    settings = config_module.load(config_module.write_starter(tmp_path / "hydraguard.toml"))
    settings.detect = settings.detect.model_copy(update=FAST)
    return settings


def eventually(condition: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status  # a zombie whose new parent has not reaped it yet: it runs no more


def test_background_detection_blocks_a_harvester_then_stops_with_its_parent(
    settings: config_module.Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hydraguard.detect.background")
    harvester, bystander = seed_harvester(settings)
    registry = open_registry(settings)
    decisions = SqlDecisionStore(registry.engine)

    def harvester_blocked() -> bool:
        asyncio.run(decisions.refresh(force=True))
        return bool(decisions.match(key_id=None, account_id=harvester, ip=None))

    with BackgroundDetector(settings) as detector:
        child = detector.process
        assert child is not None and child.is_alive()
        eventually(harvester_blocked)
    assert not child.is_alive() and child.exitcode == 0  # stopped between steps, not terminated
    assert detector.starts == 1

    matched = decisions.match(key_id=None, account_id=harvester, ip=None)
    assert [(d.type, d.source) for d in matched] == [(DecisionType.BLOCK, "detect:reasoning-trace-harvest")]
    assert decisions.match(key_id=None, account_id=bystander, ip=None) == []
    assert [c.id for c in CampaignStore(registry.engine).list()] == [harvester]
    registry.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "hydraguard.detect.background"]
    assert messages[0].startswith(f"background detection started (pid {child.pid})")
    assert messages[-1] == f"background detection stopped (pid {child.pid}, exit code 0)"


def test_a_detector_that_crashes_is_logged_and_restarted_with_backoff_and_its_parent_carries_on(
    settings: config_module.Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings.logging.level = "NO-SUCH-LEVEL"  # the worker fails as it starts, before its slower imports
    settings.detect.restart_backoff = 0.1
    with BackgroundDetector(settings) as detector:
        eventually(lambda: detector.starts >= 3)
    child = detector.process
    assert child is not None and not child.is_alive()
    crashes = [r for r in caplog.records if r.levelno == logging.ERROR and "exited unexpectedly" in r.getMessage()]
    assert len(crashes) >= 2
    assert [re.search(r"restarting in (\S+) s", r.getMessage())[1] for r in crashes[:2]] == ["0.1", "0.2"]  # type: ignore[index]
    assert all("exit code 1)" in r.getMessage() for r in crashes)


def test_serve_detect_survives_a_killed_detector_and_leaves_no_process_behind(
    settings: config_module.Settings, tmp_path: Path
) -> None:
    port = free_port()
    stderr = tmp_path / "serve.log"
    exe = Path(sys.executable).with_name("hydraguard")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRAGUARD_")}
    env |= {"HYDRAGUARD_LOGGING__JSON_FORMAT": "false", "HYDRAGUARD_DETECT__RESTART_BACKOFF": "0.1"}
    with stderr.open("wb") as log:
        server = subprocess.Popen(
            [str(exe), "serve", "--detect", "--port", str(port), "--poll-interval", "0.2"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:

        def children() -> list[int]:
            assert server.poll() is None, stderr.read_text()
            return [int(pid) for pid in re.findall(r"background detection started \(pid (\d+)\)", stderr.read_text())]

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            except httpx.TransportError:
                return False

        eventually(lambda: healthy() and children())
        first = children()[0]
        os.kill(first, signal.SIGKILL)
        eventually(lambda: len(children()) == 2)
        assert healthy()
        assert f"background detection exited unexpectedly (pid {first}, exit code -9)" in stderr.read_text()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    output = stderr.read_text()
    started = [int(pid) for pid in re.findall(r"background detection started \(pid (\d+)\)", output)]
    assert len(started) == 2 and all(gone(pid) for pid in started), output
    assert f"background detection stopped (pid {started[1]}, exit code 0)" in output
    assert server.returncode == 128 + signal.SIGTERM


def test_detection_intervals_come_from_the_config_and_the_command_line_and_are_checked(
    settings: config_module.Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from hydraguard.cli import app

    runner = CliRunner()
    crossed = runner.invoke(app, ["serve", "--detect", "--analysis-interval", "600", "--linkage-interval", "60"])
    assert crossed.exit_code == 2
    assert "--linkage-interval must be at least --analysis-interval (here 60 < 600" in crossed.output
    against_config = runner.invoke(app, ["detect", "--analysis-interval", "30000"])  # [detect] linkage: 21600
    assert against_config.exit_code == 2 and "(here 21600 < 30000" in against_config.output

    monkeypatch.setenv("HYDRAGUARD_DETECT__LINKAGE_INTERVAL", "60")
    with pytest.raises(config_module.ConfigError, match=r"linkage_interval must be at least detect\.analysis_interval"):
        config_module.load(tmp_path / "hydraguard.toml")
    monkeypatch.delenv("HYDRAGUARD_DETECT__LINKAGE_INTERVAL")
    monkeypatch.setenv("HYDRAGUARD_DETECT__BATCH_LINKAGE_INTERVAL", "60")
    with pytest.raises(config_module.ConfigError, match=r"batch_linkage_interval must be at least detect\.analysis"):
        config_module.load(tmp_path / "hydraguard.toml")
    monkeypatch.delenv("HYDRAGUARD_DETECT__BATCH_LINKAGE_INTERVAL")
    monkeypatch.setenv("HYDRAGUARD_DETECT__BATCH_LINKAGE_LAG", "-1")
    with pytest.raises(config_module.ConfigError, match=r"batch_linkage_lag"):
        config_module.load(tmp_path / "hydraguard.toml")


def test_the_engine_takes_its_intervals_and_tier_limits_from_the_config(tmp_path: Path) -> None:
    path = config_module.write_starter(tmp_path / "hydraguard.toml")
    text = path.read_text() + "\n[tiers.gold.account]\ntpd = 5000000\n\n[tiers.open.account]\nrpm = 10\n"
    path.write_text(text.replace("analysis_interval = 3600", "analysis_interval = 1800"))
    settings = config_module.load(path)
    engine = engine_settings(settings)
    assert engine.analysis_interval == 1800.0
    assert engine.linkage_interval == settings.detect.linkage_interval == 21_600.0
    assert engine_settings(settings, batch=True).linkage_interval == settings.detect.batch_linkage_interval == 86_400.0
    assert engine_settings(settings, batch=True).linkage_lag == settings.detect.batch_linkage_lag == 43_200.0
    assert engine.linkage_lag == 0.0  # streaming applies a linkage at once
    # a file's [tiers] replaces the built-in ones; a tier without a daily limit has no usage to measure
    assert engine.tier_tokens_per_day == {
        name: float(tier.account.tpd) for name, tier in settings.tiers.items() if tier.account.tpd
    }
    assert engine.tier_tokens_per_day.get("gold") == 5_000_000.0 and "open" not in engine.tier_tokens_per_day
