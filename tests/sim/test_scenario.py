"""The scenario format: shipped scenarios load, and invalid ones fail with messages that say what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydraguard.sim import clients
from hydraguard.sim import scenario as scenarios
from hydraguard.sim.scenario import CampaignPopulation, LegitPopulation, ScenarioError

SHIPPED = ["cot-probe", "legit-only", "low-and-slow", "reseller", "seed-hydra", "seed-hydra-small"]

MINIMAL = """
name: minimal
seed: 1
start: 2026-04-22T00:00:00Z
days: 2
populations:
  - name: users
    role: legit
    accounts: {count: 5}
    activity: {requests_per_day: {median: 3}}
"""


def test_every_shipped_scenario_loads_by_name_and_by_path() -> None:
    assert scenarios.builtin_names() == SHIPPED
    for name in SHIPPED:
        loaded, path, text = scenarios.load(name)
        assert loaded.name == name
        assert scenarios.load(path)[0] == loaded
        assert text.startswith("#")  # each file explains itself


def test_seed_hydra_is_the_case_at_full_scale() -> None:
    hydra = scenarios.load("seed-hydra")[0]
    assert (hydra.start.isoformat(), hydra.days) == ("2026-04-22T00:00:00+00:00", 44)
    campaign = [p for p in hydra.populations if isinstance(p, CampaignPopulation)]
    assert {p.campaign for p in campaign} == {"hydra"}
    volume = 0.0
    for pop in campaign:
        for phase in pop.activity.phases:
            volume += phase.requests_per_day * ((phase.end_day or hydra.days) - phase.start_day)
    assert volume == pytest.approx(28.8e6, rel=0.02)
    small = scenarios.load("seed-hydra-small")[0]
    assert [p.name for p in small.populations] == [p.name for p in hydra.populations]


def test_legit_only_has_every_hard_negative() -> None:
    legit = scenarios.load("legit-only")[0]
    assert all(isinstance(p, LegitPopulation) for p in legit.populations)
    hard = {p.name: p for p in legit.populations if isinstance(p, LegitPopulation) and p.hard_negative}
    assert hard["companies"].accounts.per_org > 1 and hard["companies"].payment.scope == "org"
    assert hard["students"].accounts.signup.bursts[0].hours <= 7 * 24 and hard["students"].email.domains == {"edu": 1}
    assert hard["eval-pipelines"].sampling.mode == "fixed" and hard["eval-pipelines"].prompts.source == "eval_set"
    assert hard["labelling"].prompts.source == "labelling"
    assert "reseller" in hard


def _error(text: str) -> str:
    with pytest.raises(ScenarioError) as info:
        scenarios.parse(text, "test.yaml")
    return str(info.value)


def test_minimal_scenario_gets_documented_defaults() -> None:
    loaded = scenarios.parse(MINIMAL)
    assert loaded.corpora.legit == "../shared/data/prompts/legit.jsonl"
    pop = loaded.populations[0]
    assert isinstance(pop, LegitPopulation)
    assert pop.client.user_agents == "mix" and pop.sampling.mode == "mix"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("count: 5", "cont: 5"), "populations.0.legit.accounts.cont: Extra inputs are not permitted"),
        (("count: 5", "count: 0"), "populations.0.legit.accounts.count: Input should be greater than or equal to 1"),
        (("role: legit", "role: attacker"), "populations.0: Input tag 'attacker' found using 'role' does not match"),
        (("2026-04-22T00:00:00Z", "2026-04-22T00:00:00"), "start: Value error, start must be a UTC time"),
        (("days: 2", "days: 0"), "days: Input should be greater than or equal to 1"),
        (("{median: 3}", "{median: -3}"), "requests_per_day.median: Input should be greater than 0"),
    ],
)
def test_invalid_fields_are_named(change: tuple[str, str], expected: str) -> None:
    message = _error(MINIMAL.replace(*change))
    assert message.startswith("test.yaml: ")
    assert expected in message


def test_semantic_errors_are_explained() -> None:
    twice = MINIMAL + MINIMAL[MINIMAL.index("  - name: users") :]
    assert "population names must be unique" in _error(twice)
    burst = MINIMAL.replace("{count: 5}", "{count: 5, signup: {existing: 0.8, bursts: [{day: 0, share: 0.5}]}}")
    assert "must not exceed 1" in _error(burst)
    fixed = MINIMAL.replace("    activity:", "    sampling: {mode: fixed}\n    activity:")
    assert "`fixed` parameters are required" in _error(fixed)
    campaign = MINIMAL + (
        "  - {name: bad, role: campaign, campaign: c, accounts: {count: 1},"
        " activity: {phases: [{start_day: 1, end_day: 5, requests_per_day: 10}]}}\n"
    )
    assert "population bad: phase days [1.0, 5.0) not in span" in _error(campaign)
    browser = MINIMAL.replace("    activity:", "    client: {user_agents: {netscape: 1}}\n    activity:")
    assert "populations.0.legit.client.user_agents: Value error, unknown ['netscape']; known: ['aiohttp'" in _error(
        browser
    )
    tools = MINIMAL.replace("    activity:", "    sampling: {mode: fixed, fixed: {tools: hammer}}\n    activity:")
    assert "sampling.fixed.tools: Value error, unknown ['hammer']" in _error(tools)
    owners = MINIMAL.replace("    activity:", "    payment: {scope: pool, cards: 3, pool_of: c}\n    activity:")
    assert "population users: pool_of 'c' is not a campaign of this scenario" in _error(owners)
    own_card = MINIMAL.replace("    activity:", "    payment: {scope: account, pool_of: c}\n    activity:")
    assert "population users: only a legitimate population with scope pool has pool_of" in _error(own_card)
    assert "not valid YAML" in _error("name: [unclosed")
    assert "a scenario is a YAML mapping" in _error("- just a list")


def test_unknown_names_and_files() -> None:
    with pytest.raises(ScenarioError, match="no scenario 'nope'; shipped scenarios: cot-probe"):
        scenarios.load("nope")
    with pytest.raises(ScenarioError, match="does not exist"):
        scenarios.load(Path("/nonexistent/x.yaml"))


def test_no_campaign_sends_a_parameter_value_the_legitimate_mix_never_draws() -> None:
    """A campaign's fixed parameters come from the legitimate catalogue: a value only attackers send would hand
    sampling-parameter linkage a marker real traffic does not carry."""
    for name in SHIPPED:
        for population in scenarios.load(name)[0].populations:
            fixed = population.sampling.fixed
            if not isinstance(population, CampaignPopulation) or fixed is None:
                continue
            for field, (values, weights) in clients.MIX.items():
                drawn = {v for v, w in zip(values, weights, strict=True) if w > 0}
                # the mix spells logprobs as (logprobs, top_logprobs)
                value = (True, fixed.top_logprobs) if field == "logprobs" and fixed.logprobs else getattr(fixed, field)
                assert value in drawn, (name, population.name, field, value)
