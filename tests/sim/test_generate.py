"""The simulator's output: schema, layout, ground truth, determinism and the gateway's own prompt statistics."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from hydraguard.detect.request import client_fingerprint, request_features, sampling_fingerprint
from hydraguard.events.schema import ARROW_SCHEMA
from hydraguard.gateway.requests import describe_chat
from hydraguard.sim import generate, output
from hydraguard.sim.scenario import Scenario
from tests.sim.conftest import read, read_events, shortened

DAY = 86_400.0

Run = tuple[Scenario, Path, dict[str, Any]]


def _parquet_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.parquet"))}


def test_layout_and_schema(small_run: Run) -> None:
    scenario, out, manifest = small_run
    days = sorted(p.name for p in (out / "events").iterdir())
    assert days == [f"day=2026-04-{22 + d}" for d in range(scenario.days)]
    for d, name in enumerate(days):
        table = read(out, f"events/{name}/part-0.parquet")
        assert table.schema.equals(ARROW_SCHEMA, check_metadata=True)
        times = table.column("time").to_numpy()
        start = scenario.start_ts + d * DAY
        assert start <= times.min() and times.max() < start + DAY
        assert np.all(np.diff(times) >= 0)
    for name in ("registry/orgs.parquet", "registry/accounts.parquet", "registry/keys.parquet", "truth.parquet"):
        assert (out / name).is_file()
    saved = json.loads((out / "manifest.json").read_text())
    assert saved["counts"]["events"] == manifest["counts"]["events"] == read_events(out, ["time"]).num_rows
    assert saved["seed"] == scenario.seed and set(saved["timings"]) >= {"total_s", "events_per_s"}


def test_events_fill_what_the_gateway_records(small_run: Run) -> None:
    _, out, _ = small_run
    events = read_events(out)
    served = events.filter(pc.equal(events["status"], 200))
    for name in ("request_id", "client_ip", "user_agent", "key_id", "account_id", "org_id", "tier", "model"):
        assert served[name].null_count == 0, name
    for name in ("prompt_ref", "prompt_tokens", "completion_tokens", "finish_reason", "upstream_latency_ms"):
        assert served[name].null_count == 0, name
    assert pc.all(pc.greater(served["prompt_chars"], 0)).as_py()
    assert pc.all(pc.greater_equal(served["latency_ms"], served["upstream_latency_ms"])).as_py()
    assert len(set(events["request_id"].to_pylist())) == events.num_rows
    for name in ("template_hash", "template_signature", "reasoning_extraction_score", "capability_area"):
        assert served[name].null_count == 0, name  # the detection layer's request features
    for name in ("sampling_fingerprint", "client_fingerprint"):
        assert served[name].null_count == 0, name
    assert events["prompt_text"].null_count == events.num_rows  # opt-in only
    refused = events.filter(pc.equal(events["status"], 403))
    assert refused.num_rows > 0
    assert set(refused["refusal_reason"].to_pylist()) == {"account_banned"}
    assert refused["prompt_ref"].null_count == refused.num_rows


def test_every_event_belongs_to_the_registry_and_the_truth(small_run: Run) -> None:
    _, out, _ = small_run
    events = read_events(out, ["account_id", "key_id", "org_id", "tier"])
    accounts = read(out, "registry/accounts.parquet")
    keys = read(out, "registry/keys.parquet")
    truth = read(out, "truth.parquet")
    org_of = dict(zip(accounts["id"].to_pylist(), accounts["org_id"].to_pylist(), strict=True))
    tier_of = dict(zip(accounts["id"].to_pylist(), accounts["tier"].to_pylist(), strict=True))
    owner = dict(zip(keys["id"].to_pylist(), keys["account_id"].to_pylist(), strict=True))
    orgs = set(read(out, "registry/orgs.parquet")["id"].to_pylist())
    assert set(truth["account_id"].to_pylist()) == set(org_of)
    assert set(org_of.values()) <= orgs
    rows = zip(*(events[c].to_pylist() for c in ("account_id", "key_id", "org_id", "tier")), strict=True)
    for account, key, org, tier in set(rows):
        assert owner[key] == account and org_of[account] == org and tier_of[account] == tier
    counts = dict(zip(truth["account_id"].to_pylist(), truth["requests"].to_pylist(), strict=True))
    assert sum(counts.values()) == events.num_rows
    seen = pc.value_counts(events["account_id"]).to_pylist()
    assert all(counts[v["values"]] == v["counts"] for v in seen)


def test_truth_labels_campaigns_and_hard_negatives(small_run: Run) -> None:
    scenario, out, _ = small_run
    truth = read(out, "truth.parquet").to_pylist()
    by_population: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in truth:
        by_population[row["population"]].append(row)
    for pop in scenario.populations:
        rows = by_population[pop.name]
        assert rows, pop.name
        if pop.role == "campaign":
            assert {r["campaign_id"] for r in rows} == {pop.campaign}
        else:
            assert {r["campaign_id"] for r in rows} == {None}
            assert {r["hard_negative"] for r in rows} == {pop.hard_negative}
    status = dict(zip(*(read(out, "registry/accounts.parquet")[c].to_pylist() for c in ("id", "status")), strict=True))
    signup = {r["account_id"]: r["signup_at"] for r in truth}
    banned = {r["account_id"]: r["banned_at"] for r in truth}
    replacements = [r for r in truth if r["replaces"] is not None]
    assert replacements
    for r in replacements:  # a replacement signs up after the account it replaces is banned
        assert banned[r["replaces"]] is not None and signup[r["account_id"]] > banned[r["replaces"]]
    for account, when in banned.items():
        assert (status[account] == "banned") == (when is not None)


def test_banned_accounts_are_served_only_before_their_ban(small_run: Run) -> None:
    _, out, _ = small_run
    truth = read(out, "truth.parquet")
    banned = {a: t for a, t in zip(truth["account_id"].to_pylist(), truth["banned_at"].to_pylist(), strict=True) if t}
    signup = dict(zip(truth["account_id"].to_pylist(), truth["signup_at"].to_pylist(), strict=True))
    events = read_events(out, ["time", "account_id", "status"])
    for when, account, status in zip(*(events[c].to_pylist() for c in ("time", "account_id", "status")), strict=True):
        assert when >= signup[account]
        if account in banned:
            assert (status == 403) == (when >= banned[account])


def _population_of(out: Path) -> dict[str, str]:
    truth = read(out, "truth.parquet")
    return dict(zip(truth["account_id"].to_pylist(), truth["population"].to_pylist(), strict=True))


def test_campaign_behaviours_are_measurable(small_run: Run) -> None:
    _, out, _ = small_run
    population = _population_of(out)
    events = read_events(out, ["time", "account_id", "prompt_ref", "client_ip", "user_agent", "status"])
    events = events.filter(pc.equal(events["status"], 200))
    pops = np.array([population[a] for a in events["account_id"].to_pylist()])
    times = events["time"].to_numpy()

    # 24/7 load balancing vs business hours: spread of activity over the UTC hours of the day
    def hourly_spread(name: str) -> float:
        counts = np.bincount(((times[pops == name] % DAY) // 3600).astype(int), minlength=24)
        return float(counts.std() / counts.mean())

    assert hourly_spread("hydra-cluster") < 0.1
    assert hourly_spread("companies") > 0.6
    # synchronized rounds: the cluster's requests leave together at the start of each minute
    in_round = np.mean((times[pops == "hydra-cluster"] % 60) < 10)
    assert in_round > 0.9
    assert np.mean((times[pops == "developers"] % 60) < 10) < 0.3

    # one account, many IPs and user agents
    def per_account(column: str, name: str) -> float:
        values: dict[str, set[str]] = defaultdict(set)
        mask = pops == name
        owners, seen = np.array(events["account_id"].to_pylist())[mask], np.array(events[column].to_pylist())[mask]
        for a, v in zip(owners, seen, strict=True):
            values[a].add(v)
        return float(np.median([len(v) for v in values.values()]))

    assert per_account("client_ip", "hydra-cluster") > 10 * per_account("client_ip", "developers")
    assert per_account("user_agent", "hydra-cluster") >= 4 and per_account("user_agent", "developers") == 1

    # templates sent again and again across many accounts
    prompts = read(out, "prompts.parquet")
    template_of = {
        r["prompt_ref"]: r["template"].split("/")[0]
        for r in prompts.to_pylist()
        if r["kind"] == "template" and r["template"]
    }
    accounts_per_template: dict[str, set[str]] = defaultdict(set)
    for ref, account in zip(events["prompt_ref"].to_pylist(), events["account_id"].to_pylist(), strict=True):
        if ref in template_of:
            accounts_per_template[template_of[ref]].add(account)
    assert max(len(a) for a in accounts_per_template.values()) > 50


def test_identity_links(small_run: Run) -> None:
    scenario, out, _ = small_run
    population = _population_of(out)
    accounts = read(out, "registry/accounts.parquet").to_pylist()
    cards: dict[str, list[str | None]] = defaultdict(list)
    for row in accounts:
        cards[population[row["id"]]].append(row["payment_fingerprint"])
    hydra = cards["hydra-cluster"] + cards["hydra-direct"] + cards["hydra-probe"]
    assert None not in hydra and len(set(hydra)) <= 3  # one small pool of cards for the whole campaign
    # the customers two of the pool's cards were stolen from: a card each, customers long before the campaign
    owners = [r for r in accounts if population[r["id"]] == "card-owners"]
    assert len({r["payment_fingerprint"] for r in owners}) == len(owners) == 2
    assert {r["payment_fingerprint"] for r in owners} <= set(hydra)
    assert all(r["signup_at"] < scenario.start_ts for r in owners)
    own = [c for c in cards["developers"] if c is not None]
    assert len(own) == len(set(own)) > 0
    assert len(set(cards["companies"])) == 2  # one company card per org (two orgs of 50)
    students = [r for r in accounts if population[r["id"]] == "students"]
    signups = [r["signup_at"] for r in students]
    assert max(signups) - min(signups) <= 5 * DAY
    assert len({r["email_domain"] for r in students}) == 1 and students[0]["email_domain"].endswith(".edu")
    # the campus lab's computers and the student-id format: devices and one address shape shared across orgs
    assert len({r["email_pattern"] for r in students}) == 1 and students[0]["email_pattern"] is not None
    lab = [r["signup_device"] for r in students]
    assert None not in lab and len(set(lab)) < len(lab) / 2
    developers = [r for r in accounts if population[r["id"]] == "developers"]
    devices = [r["signup_device"] for r in developers if r["signup_device"] is not None]
    assert 0 < len(devices) < len(developers) and len(set(devices)) == len(devices)  # each their own, when reported
    shapes = [r["email_pattern"] for r in developers if r["email_pattern"] is not None]
    assert 0 < len(shapes) < len(developers) / 2
    assert not {r["signup_device"] for r in accounts if population[r["id"]].startswith("hydra")} - {None}


def test_legitimate_traffic_shape(small_run: Run) -> None:
    _, out, _ = small_run
    population = _population_of(out)
    events = read_events(out, ["account_id", "message_count", "status"])
    devs = np.array([population[a] == "developers" for a in events["account_id"].to_pylist()])
    counts = np.sort(np.unique(np.array(events["account_id"].to_pylist())[devs], return_counts=True)[1])[::-1]
    assert counts[: len(counts) // 10].sum() > 0.4 * counts.sum()  # heavy-tailed: the top 10% send >40%
    messages = events["message_count"].to_numpy()[devs]
    assert np.mean(messages >= 3) > 0.1  # follow-up turns carry the conversation so far


def test_prompt_stats_are_describe_chats_on_the_same_body() -> None:
    scenario = shortened("seed-hydra-small", 2)
    world, sims = generate.build_world(scenario, materialize_text=True)
    columns = generate.columns_for(world, materialize_text=True)
    checked, covered = 0, set()
    names = ("model", "stream", "temperature", "top_p", "max_tokens", "n", "logprobs", "top_logprobs")
    names += ("tools_count", "tools_schema_hash", "response_format", "message_count", "prompt_chars")
    names += ("prompt_tokens_est", "system_prompt_hash", "prompt_text")
    for sim in sims:
        block = sim.day(1)
        table = columns.table(block).to_pylist()
        rng = np.random.default_rng(0)
        for i in rng.choice(len(block), size=min(80, len(block)), replace=False).tolist():
            if block.prompt[i] < 0:
                continue
            body = world.body(int(block.prompt[i]), int(block.profile[i]))
            info = describe_chat(body, 4096)
            for name in names:
                assert table[i][name] == getattr(info, name), (sim.pop.name, name)
            messages = json.loads(body)["messages"]
            system = "\n".join(m["content"] for m in messages if m["role"] == "system")
            features = request_features(system, messages[-1]["content"], info.tools_count)
            for name in ("template_hash", "template_signature", "reasoning_extraction_score", "capability_area"):
                assert table[i][name] == getattr(features, name), (sim.pop.name, name)
            assert table[i]["sampling_fingerprint"] == sampling_fingerprint(info)
            assert table[i]["client_fingerprint"] == client_fingerprint(table[i]["user_agent"])
            checked += 1
            covered |= {"tools"} if info.tools_count else set()
            covered |= {"system"} if info.system_prompt_hash else set()
            covered |= {"history"} if info.message_count >= 3 else set()
            covered |= {"stream"} if info.stream else set()
    assert checked > 500 and covered == {"tools", "system", "history", "stream"}


def test_a_day_written_row_group_by_row_group_is_the_file_its_whole_table_makes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output, "ROW_GROUP", 2_000)  # a few row groups out of one small day
    scenario = shortened("seed-hydra-small", 2)
    world, sims = generate.build_world(scenario, materialize_text=True)
    columns = generate.columns_for(world, materialize_text=True)
    block = output.Block.concat([sim.day(0) for sim in sims])
    block = block.take(np.argsort(block.time, kind="stable"))
    output.write_parquet(columns.table(block), str(tmp_path / "whole.parquet"))
    output.write_day(columns, block, str(tmp_path / "parts.parquet"))
    assert pq.ParquetFile(tmp_path / "parts.parquet").num_row_groups == -(-len(block) // 2_000) > 2
    assert (tmp_path / "parts.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    scenario = shortened("seed-hydra-small", 2)
    generate.simulate(scenario, tmp_path / "a")
    generate.simulate(scenario, tmp_path / "b")
    first, again = _parquet_files(tmp_path / "a"), _parquet_files(tmp_path / "b")
    assert len(first) == 2 + 3 + 2 and first == again
    other = shortened("seed-hydra-small", 2, seed=scenario.seed + 1)
    generate.simulate(other, tmp_path / "c")
    changed = _parquet_files(tmp_path / "c")
    assert all(changed[name] != first[name] for name in first)


def test_a_population_does_not_depend_on_the_others(tmp_path: Path) -> None:
    scenario = shortened("seed-hydra-small", 2)
    probe = next(p for p in scenario.populations if p.name == "hydra-probe")
    alone = Scenario.model_validate(
        {**scenario.model_dump(mode="json"), "populations": [probe.model_dump(mode="json")]}
    )
    generate.simulate(scenario, tmp_path / "all")
    generate.simulate(alone, tmp_path / "alone")
    probe_all = read_events(tmp_path / "all", ["account_id", "time", "prompt_ref"])
    probe_alone = read_events(tmp_path / "alone", ["account_id", "time", "prompt_ref"])
    ids = set(probe_alone["account_id"].to_pylist())
    mask = np.array([a in ids for a in probe_all["account_id"].to_pylist()])
    assert probe_all.filter(mask).equals(probe_alone)


def test_probing_then_scaling_reuses_probed_techniques(tmp_path: Path) -> None:
    scenario = shortened("cot-probe", 9)
    data = scenario.model_dump(mode="json")
    data["populations"] = [p for p in data["populations"] if p["role"] == "campaign"]
    data["populations"][0]["activity"]["phases"][1]["requests_per_day"] = 3000
    generate.simulate(Scenario.model_validate(data), tmp_path)
    events = read_events(tmp_path, ["time", "prompt_ref"])
    technique = {r["prompt_ref"]: r["technique"] for r in read(tmp_path, "prompts.parquet").to_pylist()}
    switch = scenario.start_ts + 7 * DAY
    probe, scale = set(), set()
    for when, ref in zip(events["time"].to_pylist(), events["prompt_ref"].to_pylist(), strict=True):
        if ref is not None and technique.get(ref) is not None:
            (probe if when < switch else scale).add(technique[ref])
    assert len(probe) > 10_000 and len(scale) == 5 and scale <= probe


def test_low_and_slow_keeps_little_of_the_obvious(tmp_path: Path) -> None:
    scenario = shortened("low-and-slow", 4)
    generate.simulate(scenario, tmp_path)
    population = _population_of(tmp_path)
    events = read_events(tmp_path, ["time", "account_id", "client_ip", "user_agent", "temperature", "status"])
    pops = np.array([population[a] for a in events["account_id"].to_pylist()])
    times, ips = events["time"].to_numpy(), np.array(events["client_ip"].to_pylist())
    legit_ips = set(ips[~np.char.startswith(pops.astype(str), "slow-")])
    cluster = pops == "slow-1"  # human hours at UTC-5: quiet from 04:00 to 11:00 UTC
    hours = ((times[cluster] % DAY) // 3600).astype(int)
    assert np.mean((hours >= 5) & (hours < 11)) < 0.1
    assert len(set(ips[cluster]) & legit_ips) > 0  # exits are lines legitimate users also use
    agents: dict[str, set[str]] = defaultdict(set)
    for account, agent in zip(
        np.array(events["account_id"].to_pylist())[cluster],
        np.array(events["user_agent"].to_pylist())[cluster],
        strict=True,
    ):
        agents[account].add(agent)
    assert {len(a) for a in agents.values()} == {1}
    assert len(set(np.array(events["temperature"].to_pylist(), dtype=object)[cluster])) >= 5
