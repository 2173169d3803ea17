"""Streaming detection: the worker follows a gateway event log as it grows and writes decisions the gateway reads."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import sqlalchemy as sa

from hydraguard import config as config_module
from hydraguard.accounts.models import Account, AccountStatus
from hydraguard.accounts.risk import SignupLinks
from hydraguard.decide.model import DecisionType, ScopeKind
from hydraguard.decide.policy import Policy
from hydraguard.decide.store import SqlDecisionStore
from hydraguard.detect.campaigns import CampaignStatus, CampaignStore
from hydraguard.detect.engine import Engine, EngineSettings
from hydraguard.detect.linkage import Evidence
from hydraguard.detect.worker import DetectionWorker, EventFollower
from hydraguard.events.log import EventLog
from hydraguard.events.schema import table_to_events
from tests.detect.helpers import seed_harvester
from tests.detect.test_engine import T0, build_stream

HOUR = 3600.0


def shifted(table: pa.Table, column: str, offset: float) -> pa.Table:
    index = table.schema.get_field_index(column)
    return table.set_column(index, column, pc.add(table.column(column), offset))


def test_the_follower_returns_each_flushed_event_once_across_segments(tmp_path: Path) -> None:
    events = table_to_events(build_stream().events.slice(0, 300))
    first = EventLog(tmp_path, segment_max_events=100)
    follower = EventFollower(tmp_path)
    assert follower.poll().num_rows == 0
    for event in events[:150]:
        first.append(event)
    first.flush()
    assert follower.poll().column("request_id").to_pylist() == [e.request_id for e in events[:150]]
    assert follower.poll().num_rows == 0
    second = EventLog(tmp_path)  # a second gateway process, its own segment
    for event in events[150:]:
        second.append(event)
    second.flush()
    later = follower.poll()
    assert sorted(later.column("request_id").to_pylist()) == sorted(e.request_id for e in events[150:])
    assert later.column("time").to_pylist() == sorted(later.column("time").to_pylist())
    first.close()
    second.close()


@pytest.fixture
def live(tmp_path: Path):  # type: ignore[no-untyped-def]
    """The test stream moved to the last two days, so that decisions written now are in force."""
    stream = build_stream()
    offset = time.time() - 2.5 * 86_400 - T0
    events = shifted(stream.events, "time", offset)
    registry = shifted(stream.registry, "signup_at", offset)
    accounts = [
        Account(id=r["id"], org_id=r["org_id"], tier="free", status=AccountStatus.ACTIVE, **_signup(r))
        for r in registry.to_pylist()
    ]
    db = sa.create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    return stream, events, accounts, db


def _signup(row: dict[str, object]) -> dict[str, object]:
    keys = ("signup_at", "signup_ip", "email_domain", "payment_fingerprint")
    return {k: row[k] for k in keys}


async def test_the_worker_contains_a_hydra_as_its_traffic_arrives(tmp_path: Path, live) -> None:  # type: ignore[no-untyped-def]
    stream, events, accounts, db = live
    log_dir = tmp_path / "events"
    gateway_log = EventLog(log_dir)
    decisions = SqlDecisionStore(db)
    campaigns = CampaignStore(db)
    worker = DetectionWorker(
        Engine(settings=EngineSettings(analysis_interval=HOUR)),
        EventFollower(log_dir),
        campaigns,
        Policy(dismissed=campaigns.dismissed),
        decisions,
        lambda: accounts,
    )
    steps = []
    for chunk in events.to_batches(max_chunksize=2_000):  # the gateway flushing as traffic arrives
        for event in table_to_events(pa.Table.from_batches([chunk])):
            gateway_log.append(event)
        gateway_log.flush()
        steps.append(await worker.step(now=float(chunk.column("time")[-1].as_py())))
    steps.append(await worker.step(now=time.time()))  # traffic stopped: the due analysis still runs
    gateway_log.close()

    assert sum(s.events for s in steps) == events.num_rows
    assert any(s.decisions for s in steps)
    await decisions.refresh(force=True)
    for account in stream.campaign:
        types = {d.type for d in decisions.match(key_id=None, account_id=account, ip=None)}
        assert DecisionType.BLOCK in types, account
    for account in stream.legit:
        assert decisions.match(key_id=None, account_id=account, ip=None) == [], account
    clusters = [c for c in campaigns.list() if c.level == "cluster"]
    assert clusters and set(stream.campaign) <= set(clusters[0].accounts)
    assert clusters[0].status is CampaignStatus.OPEN
    group_decisions = [d for d in await decisions.list() if d.scope is ScopeKind.GROUP]
    assert group_decisions and all(d.source.startswith("detect:") for d in group_decisions)


async def test_the_worker_reads_signup_links_when_new_accounts_appear(tmp_path: Path, live) -> None:  # type: ignore[no-untyped-def]
    _, _, accounts, db = live
    (tmp_path / "events").mkdir()
    reads = []
    registered = accounts[:3]

    def signups(account_ids: list[str]) -> dict[str, SignupLinks]:
        reads.append(len(account_ids))
        links = {registered[0].id: SignupLinks("device_farm", None), registered[1].id: SignupLinks("device_farm", "s")}
        return {account: links[account] for account in account_ids if account in links}

    campaigns = CampaignStore(db)
    worker = DetectionWorker(
        Engine(settings=EngineSettings(analysis_interval=HOUR)),
        EventFollower(tmp_path / "events"),
        campaigns,
        Policy(dismissed=campaigns.dismissed),
        SqlDecisionStore(db),
        lambda: registered,
        signups=signups,
    )
    await worker.step(now=time.time())
    await worker.step(now=time.time())  # no new account: the signups are not read again
    registered = accounts[:4]
    await worker.step(now=time.time())
    assert reads == [3, 1]  # all three, then the new one only
    account, kind, value, _ = worker.engine.evidence.incidences()
    index = worker.engine.accounts.index
    device = kind == int(Evidence.SIGNUP_DEVICE)
    assert sorted(account[device].tolist()) == sorted(index[a.id] for a in registered[:2])
    assert {worker.engine.evidence.name(int(v)) for v in value[device]} == {"device_farm"}
    assert account[kind == int(Evidence.EMAIL_PATTERN)].tolist() == [index[registered[1].id]]


@pytest.fixture
def initialized(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> config_module.Settings:
    """`hydraguard init` in a temporary directory, nothing from the environment: its settings."""
    from typer.testing import CliRunner

    from hydraguard.cli import app

    monkeypatch.chdir(tmp_path)
    for name in ("HYDRAGUARD_CONFIG", "HYDRAGUARD_EVENTS__DIR", "HYDRAGUARD_REGISTRY__URL"):
        monkeypatch.delenv(name, raising=False)
    assert CliRunner().invoke(app, ["init"]).exit_code == 0
    return config_module.load("hydraguard.toml")


def test_hydraguard_detect_makes_one_pass_and_blocks_a_reasoning_harvester(initialized: config_module.Settings) -> None:
    from typer.testing import CliRunner

    from hydraguard.cli import app
    from hydraguard.gateway.build import open_registry

    settings = initialized
    harvester, bystander = seed_harvester(settings)
    runner = CliRunner()
    result = runner.invoke(app, ["detect", "--analysis-interval", "600", "--linkage-interval", "3600"])
    assert result.exit_code == 0, result.output
    summary = result.output.splitlines()[-1]
    assert summary.startswith("80 events,") and not summary.endswith(" 0 decisions")

    registry = open_registry(settings)
    store = SqlDecisionStore(registry.engine)
    asyncio.run(store.refresh(force=True))
    matched = store.match(key_id=None, account_id=harvester, ip=None)
    assert [(d.type, d.source) for d in matched] == [(DecisionType.BLOCK, "detect:reasoning-trace-harvest")]
    assert store.match(key_id=None, account_id=bystander, ip=None) == []
    assert [c.id for c in CampaignStore(registry.engine).list()] == [harvester]
    registry.close()

    bad = runner.invoke(app, ["detect", "--analysis-interval", "600", "--linkage-interval", "60"])
    assert bad.exit_code != 0 and "--linkage-interval must be at least --analysis-interval" in bad.output


def test_hydraguard_analyze_reads_a_gateway_event_log_with_the_config_s_registry(
    initialized: config_module.Settings, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from hydraguard.cli import app

    settings = initialized
    harvester, bystander = seed_harvester(settings)
    result = CliRunner().invoke(app, ["analyze", str(settings.events.dir), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    campaigns = json.loads((tmp_path / "report" / "campaigns.json").read_text())
    assert [c["accounts"] for c in campaigns] == [[harvester]]
    assert bystander not in (tmp_path / "report" / "report.md").read_text()


def test_hydraguard_analyze_links_daily_unless_told_otherwise(
    initialized: config_module.Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from hydraguard.cli import app
    from hydraguard.detect import analyze as analysis

    intervals: list[float] = []
    lags: list[float] = []
    real = analysis.analyze

    def spy(batches, registry, engine):  # type: ignore[no-untyped-def]
        intervals.append(engine.settings.linkage_interval)
        lags.append(engine.settings.linkage_lag)
        return real(batches, registry, engine)

    monkeypatch.setattr(analysis, "analyze", spy)
    seed_harvester(initialized)
    runner, events = CliRunner(), str(initialized.events.dir)
    assert runner.invoke(app, ["analyze", events, "--out", str(tmp_path / "a")]).exit_code == 0
    given = runner.invoke(app, ["analyze", events, "--out", str(tmp_path / "b"), "--linkage-interval", "7200"])
    assert given.exit_code == 0, given.output
    assert intervals == [86_400.0, 7_200.0]
    too_short = runner.invoke(app, ["analyze", events, "--out", str(tmp_path / "c"), "--linkage-interval", "60"])
    assert too_short.exit_code == 2
    assert "--linkage-interval must be at least detect.analysis_interval (here 60 < 3600)" in too_short.output
    assert intervals == [86_400.0, 7_200.0] and lags == [43_200.0, 43_200.0]
    at_once = runner.invoke(app, ["analyze", events, "--out", str(tmp_path / "d"), "--linkage-lag", "0"])
    assert at_once.exit_code == 0, at_once.output
    assert lags[-1] == 0.0
    negative = runner.invoke(app, ["analyze", events, "--out", str(tmp_path / "e"), "--linkage-lag", "-1"])
    assert negative.exit_code == 2 and len(lags) == 3
