"""The detection engine end to end on a small synthetic stream: a hydra campaign among legitimate accounts over two
days, through `Engine` directly and through the harness's `HydraGuard` detector."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest

from hydraguard.decide.model import DecisionType, ScopeKind
from hydraguard.decide.policy import Policy
from hydraguard.detect.engine import Detection, Engine, EngineSettings
from hydraguard.detect.linkage import Evidence
from hydraguard.detect.request import template_fingerprint
from hydraguard.detect.rules import RuleSet
from hydraguard.events.schema import RequestEvent, events_to_table
from hydraguard.sim.detector import HydraGuard
from hydraguard.sim.evaluate import run_detector

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC, a whole hour
DAY = 86_400.0
INTERVAL = 3600.0
CAMPAIGN = 15
LEGIT = 30
TEMPLATE = "You are a meticulous solver. Task: {task} Work through it, then give the final answer on its own line."
TASKS = [
    "implement a function that merges two sorted arrays in python",
    "prove that the sum of two even numbers is even",
    "write a sql query that finds duplicate emails in a users table",
    "solve the equation for x when three x plus four equals nineteen",
    "decide which of the following syllogisms is valid and why",
    "refactor this javascript class so that it uses async functions",
]
SIGNATURES = [template_fingerprint(TEMPLATE.format(task=task))[1] for task in TASKS]
AREAS = ["coding", "math", "coding", "math", "reasoning", "coding"]
BYSTANDER = "acct_bystander"


@dataclass(frozen=True)
class Stream:
    registry: pa.Table
    events: pa.Table
    campaign: list[str]
    legit: list[str]

    def batches(self, size: int = 400) -> list[pa.RecordBatch]:
        return self.events.to_batches(max_chunksize=size)


def _event(time: float, account: str, org: str, n: int, **fields: object) -> RequestEvent:
    return RequestEvent(
        time=time,
        request_id=f"req_{n}",
        endpoint="/v1/chat/completions",
        account_id=account,
        org_id=org,
        status=200,
        prompt_tokens=400,
        completion_tokens=900,
        **fields,  # type: ignore[arg-type]
    )


def build_stream(with_bystander: bool = False, bystander_days: float = 200.0) -> Stream:
    rng = np.random.default_rng(20260101)
    rows: list[dict[str, object]] = []
    events: list[RequestEvent] = []
    campaign = [f"acct_hydra{i:02d}" for i in range(CAMPAIGN)]
    legit = [f"acct_user{i:02d}" for i in range(LEGIT)]
    for i, account in enumerate(campaign):
        org = f"org_hydra{i:02d}"
        rows.append(
            {
                "id": account,
                "org_id": org,
                "signup_at": T0 - 3600.0,
                "signup_ip": f"198.18.{i}.20",
                "email_domain": f"mailbox{i}.example",
                "payment_fingerprint": f"card_pool{i % 3}",
            }
        )
        # round the clock, every 10 minutes, at the same seconds of the minute (a load balancer's rounds)
        for j in range(int(2 * DAY // 600)):
            time = T0 + 600.0 * j + 60.0 * (i % 10) + (i % 3)
            task = (i + j) % len(TASKS)
            events.append(
                _event(
                    time,
                    account,
                    org,
                    len(events),
                    client_ip=f"100.64.{(7 * i + j) % 60}.{j % 250 + 1}",
                    user_agent="python-httpx/0.27.0",
                    message_count=1,
                    reasoning_extraction_score=0.9 if j % 10 < 3 else 0.0,
                    capability_area=AREAS[task],
                    template_signature=SIGNATURES[task],
                    template_hash=f"{task:016x}",
                )
            )
    people = [(account, f"org_user{i:02d}", f"card_home{i // 2}", 7 + i % 4, 200.0) for i, account in enumerate(legit)]
    if with_bystander:  # a stolen card's owner, a customer before the pool used it, up at night
        people.append((BYSTANDER, "org_bystander", "card_pool0", 0, bystander_days))
    for i, (account, org, card, start_hour, days) in enumerate(people):
        rows.append(
            {
                "id": account,
                "org_id": org,
                "signup_at": T0 - days * DAY,
                "signup_ip": f"192.0.2.{i + 1}",
                "email_domain": f"company{i}.example",
                "payment_fingerprint": card,  # couples and flatmates share a card across their two orgs
            }
        )
        for day in range(2):
            for _ in range(40):  # office hours, in a few time zones
                time = T0 + day * DAY + (start_hour + rng.uniform(0, 8)) * 3600
                events.append(
                    _event(
                        float(time),
                        account,
                        org,
                        len(events),
                        client_ip=f"203.0.113.{i + 1}",
                        user_agent="Mozilla/5.0 Chrome/124.0.6367.91",
                        message_count=int(rng.integers(3, 9)),
                        reasoning_extraction_score=0.0,
                        capability_area=str(rng.choice(["writing", "general", "coding", "chit-chat"])),
                        template_signature=rng.bytes(32).hex(),
                        template_hash=rng.bytes(8).hex(),
                    )
                )
    events.sort(key=lambda e: e.time)
    return Stream(pa.Table.from_pylist(rows), events_to_table(events), campaign, legit)


@pytest.fixture(scope="module")
def stream() -> Stream:
    return build_stream()


@dataclass(frozen=True)
class Observed:
    engine: Engine
    detections: list[Detection]
    seen: list[float]  # per detection: the latest event time observed when it was returned


def observe_all(stream: Stream, settings: EngineSettings | None = None) -> Observed:
    engine = Engine(settings=settings or EngineSettings(analysis_interval=INTERVAL))
    engine.load_registry(stream.registry)
    detections: list[Detection] = []
    seen: list[float] = []
    latest = -math.inf
    for batch in stream.batches():
        latest = max(latest, float(batch.column("time")[-1].as_py()))
        new = engine.observe(batch)
        detections += new
        seen += [latest] * len(new)
    return Observed(engine, detections, seen)


@pytest.fixture(scope="module")
def observed(stream: Stream) -> Observed:
    return observe_all(stream)


@pytest.fixture(scope="module")
def observed_every(stream: Stream) -> Observed:
    """Every account a rule fires on emitted at every analysis (renew_interval 0)."""
    return observe_all(stream, EngineSettings(analysis_interval=INTERVAL, renew_interval=0))


def covered(detections: list[Detection]) -> set[str]:
    return {account for d in detections if d.enforcing for account in d.accounts}


def test_campaign_accounts_are_enforced_on_and_legit_accounts_are_not(stream: Stream, observed: Observed) -> None:
    hit = covered(observed.detections)
    assert set(stream.campaign) <= hit
    assert not hit & set(stream.legit)


def test_the_campaign_is_found_as_a_cluster(stream: Stream, observed: Observed) -> None:
    clusters = [d for d in observed.detections if d.level == "cluster" and d.enforcing]
    assert clusters
    in_clusters = {a for d in clusters for a in d.accounts}
    assert in_clusters == set(stream.campaign)
    last = clusters[-1]
    assert last.features["cluster.reasoning_share"] >= 0.03
    assert last.features["cluster.orgs"] == len(last.accounts)


def test_a_new_cluster_carries_what_its_members_asked_most_among_the_latest_events(
    stream: Stream, observed: Observed
) -> None:
    first = next(d for d in observed.detections if d.level == "cluster" and d.enforcing)
    assert len(first.templates) == 3
    campaign_templates = {f"{task:016x}" for task in range(len(TASKS))}
    assert {t.template_hash for t in first.templates} <= campaign_templates
    counts = [t.requests for t in first.templates]
    assert counts == sorted(counts, reverse=True) and counts[0] > 1
    events = stream.events.to_pylist()
    for sample in first.templates:
        (example,) = [e for e in events if e["request_id"] == sample.example_request_id]
        assert example["template_hash"] == sample.template_hash and example["account_id"] in first.accounts
        assert example["time"] < first.at
    again = [d for d in observed.detections if d.subject == first.subject and d is not first]
    assert again and all(d.templates == () for d in again if len(d.accounts) < 2 * len(first.accounts))


def test_analyses_run_at_interval_boundaries_and_never_look_ahead(observed: Observed) -> None:
    assert observed.detections
    for detection, latest in zip(observed.detections, observed.seen, strict=True):
        assert detection.at % INTERVAL == 0
        assert detection.at <= latest
    times = [d.at for d in observed.detections]
    assert times == sorted(times)
    assert len(set(times)) > 10  # the campaign is re-detected at analysis after analysis


def test_an_account_is_emitted_again_only_when_its_rules_change_or_its_decisions_near_their_ttl(
    observed: Observed, observed_every: Observed
) -> None:
    renew = EngineSettings().renew_interval
    emitted: dict[str, list[Detection]] = {}
    for detection in observed.detections:
        if detection.level == "account":
            emitted.setdefault(detection.subject, []).append(detection)
    assert emitted
    for runs in emitted.values():
        for earlier, later in itertools.pairwise(runs):
            same = {h.rule_id for h in earlier.hits} == {h.rule_id for h in later.hits}
            shortest = min(h.ttl or math.inf for h in later.hits)
            assert not same or later.at - earlier.at >= min(renew, shortest / 2)
    # emitted at every analysis where its rules fire (renew_interval 0) versus on change and renewal: the same
    # accounts and first times, far fewer detections
    firing: dict[str, list[Detection]] = {}
    for detection in observed_every.detections:
        if detection.level == "account":
            firing.setdefault(detection.subject, []).append(detection)
    assert {a: d[0].at for a, d in firing.items()} == {a: d[0].at for a, d in emitted.items()}
    assert sum(map(len, emitted.values())) * 3 < sum(map(len, firing.values()))
    assert covered(observed_every.detections) == covered(observed.detections)


def test_an_analysis_sees_exactly_the_events_before_it(stream: Stream) -> None:
    # renew_interval 0: every account a rule fires on is emitted at every analysis, with what that analysis saw
    engine = Engine(settings=EngineSettings(analysis_interval=INTERVAL, renew_interval=0))
    engine.load_registry(stream.registry)
    boundary = T0 + 12 * INTERVAL
    times = stream.events.column("time").to_numpy()
    upto = int(np.searchsorted(times, boundary))
    engine.observe(stream.events.slice(0, upto))
    assert int(engine.accounts.counts["requests"].sum()) == upto
    first_after = stream.events.slice(upto, 1)  # the first event at or after the boundary
    account = first_after.column("account_id")[0].as_py()
    before = int((stream.events.slice(0, upto).column("account_id").to_numpy(zero_copy_only=False) == account).sum())
    detections = engine.observe(first_after)
    assert {d.at for d in detections} == {boundary}
    [mine] = [d for d in detections if d.level == "account" and d.subject == account]
    assert mine.features["account.requests"] == before  # the analysis ran before the event was folded in
    assert int(engine.accounts.counts["requests"].sum()) == upto + 1


def test_cluster_rules_run_at_the_first_analysis_and_then_every_linkage_interval(observed_every: Observed) -> None:
    linkage = EngineSettings().linkage_interval
    account_times = sorted({d.at for d in observed_every.detections if d.level == "account"})
    cluster_times = sorted({d.at for d in observed_every.detections if d.level == "cluster"})
    assert len(account_times) > len(cluster_times) >= 2
    first = T0 + INTERVAL
    assert cluster_times[0] == first
    assert all(at % linkage == 0 for at in cluster_times[1:])


LAG = 2 * INTERVAL


def cluster_detections(observed: Observed) -> list[Detection]:
    return [d for d in observed.detections if d.level == "cluster"]


def test_a_lagged_linkage_applies_the_clusters_of_its_graph_that_much_later(
    stream: Stream, observed_every: Observed
) -> None:
    """Leiden in the worker process (`linkage_lag`): each linkage's clusters, the same as linking at once would
    find (members, evidence), judged at the first analysis `LAG` later."""
    lagged = observe_all(stream, EngineSettings(analysis_interval=INTERVAL, renew_interval=0, linkage_lag=LAG))
    at_once = {(d.at, d.subject): d for d in cluster_detections(observed_every)}
    later = cluster_detections(lagged)
    assert later and len(later) == len([at for at, _ in at_once if at + LAG <= lagged.engine.now])
    for detection in later:
        linked = at_once[detection.at - LAG, detection.subject]
        assert (detection.subject, detection.accounts, detection.evidence, detection.indicators) == (
            linked.subject,
            linked.accounts,
            linked.evidence,
            linked.indicators,
        )
    assert covered(lagged.detections) == covered(observed_every.detections)


def test_a_lagged_linkage_brings_the_template_shares_of_its_graph(stream: Stream) -> None:
    """The template shares (`top_template_share`) a linkage sets are taken with its graph, as linking at once takes
    them, not when its clusters are applied `LAG` later."""
    # between the linkage of T0 + 6 h and its clusters at T0 + 8 h, one campaign account sends one-off prompts: its
    # share of requests on its template falls
    rng = np.random.default_rng(7)
    one_offs = [
        _event(
            T0 + 6.5 * INTERVAL + 10.0 * n,
            "acct_hydra00",
            "org_hydra00",
            10**6 + n,
            template_signature=rng.bytes(32).hex(),
        )
        for n in range(100)
    ]
    events = pa.concat_tables([stream.events, events_to_table(one_offs)]).sort_by("time")
    times = events.column("time").to_numpy()

    def engine_until(hours: int, lag: float) -> Engine:
        engine = Engine(settings=EngineSettings(analysis_interval=INTERVAL, linkage_lag=lag))
        engine.load_registry(stream.registry)
        engine.observe(events.slice(0, int(np.searchsorted(times, T0 + hours * INTERVAL))))
        engine.advance(T0 + hours * INTERVAL)
        return engine

    def shares(engine: Engine, ids: list[str]) -> np.ndarray:
        numbers = np.array([engine.accounts.index[account] for account in ids])
        return engine.account_features(numbers)["top_template_share"]

    lagged = engine_until(8, LAG)  # its linkage of T0 + 6 h applied at T0 + 8 h
    ids = list(lagged.accounts.ids)
    lagged_shares = shares(lagged, ids)
    lagged.close()
    np.testing.assert_array_equal(lagged_shares, shares(engine_until(6, 0.0), ids))
    at_once_later = engine_until(12, 0.0)  # linked at T0 + 12 h, with the one-offs
    assert shares(at_once_later, ["acct_hydra00"])[0] < lagged_shares[ids.index("acct_hydra00")] == 1.0


def test_a_forced_linkage_applies_the_one_in_the_worker_first(stream: Stream) -> None:
    engine = Engine(settings=EngineSettings(analysis_interval=INTERVAL, linkage_lag=LAG))
    engine.load_registry(stream.registry)
    times = stream.events.column("time").to_numpy()
    engine.observe(stream.events.slice(0, int(np.searchsorted(times, T0 + 7 * INTERVAL))))
    # the first analysis's linkage was applied at T0 + 3 h; the one of T0 + 6 h is in the worker until T0 + 8 h
    final = [d for d in engine.analyze(engine.now, link=True) if d.level == "cluster"]
    assert final and {d.at for d in final} == {engine.now}
    assert set(stream.campaign) <= {a for d in final for a in d.accounts}
    later = [
        d
        for d in engine.observe(stream.events.slice(int(np.searchsorted(times, T0 + 11 * INTERVAL))))
        if d.level == "cluster"
    ]
    # the next are the linkage of T0 + 12 h's, at T0 + 14 h: the one the forced linkage applied is not applied again
    assert later and min(d.at for d in later) == T0 + 14 * INTERVAL


def test_a_closed_engine_drops_the_linkage_in_its_worker_and_links_in_its_own_process(stream: Stream) -> None:
    engine = Engine(settings=EngineSettings(analysis_interval=INTERVAL, linkage_lag=LAG))
    engine.load_registry(stream.registry)
    times = stream.events.column("time").to_numpy()
    engine.observe(stream.events.slice(0, int(np.searchsorted(times, T0 + 7 * INTERVAL))))
    engine.close()
    engine.close()
    # T0 + 6 h's linkage was dropped: not applied when due
    assert [d for d in engine.analyze(T0 + 8 * INTERVAL) if d.level == "cluster"] == []
    final = [d for d in engine.analyze(engine.now, link=True) if d.level == "cluster"]
    assert set(stream.campaign) <= {a for d in final for a in d.accounts}


def test_a_linkage_lag_is_at_most_half_the_linkage_interval(stream: Stream) -> None:
    lagged = observe_all(stream, EngineSettings(analysis_interval=INTERVAL, linkage_lag=DAY))
    times = sorted({d.at for d in cluster_detections(lagged)})
    # linkages at the first analysis (T0 + 1 h) and every 6 h, each applied 3 h later
    assert times[0] == T0 + 4 * INTERVAL
    assert len(times) > 2 and all((at - T0 - 3 * INTERVAL) % (6 * INTERVAL) == 0 for at in times[1:])
    with pytest.raises(ValueError, match="linkage_lag must be at least 0"):
        Engine(settings=EngineSettings(linkage_lag=-1.0))


def test_detections_carry_rule_ids_reasons_and_evidence_words(observed: Observed) -> None:
    pack = {rule.id for rule in RuleSet.default().rules}
    for detection in observed.detections:
        assert detection.hits
        for hit in detection.hits:
            assert hit.rule_id in pack
            assert hit.reasons
        assert 0 < detection.score <= 1
    account_rules = {h.rule_id for d in observed.detections if d.level == "account" for h in d.hits}
    assert "reasoning-trace-harvest" in account_rules
    cluster = next(d for d in observed.detections if d.level == "cluster")
    assert cluster.evidence
    assert any(word.startswith("payment shared by ") for word in cluster.evidence)
    assert all(" shared by " in word and word.endswith(" accounts") for word in cluster.evidence)


def test_families_off_payment_removes_payment_evidence(stream: Stream) -> None:
    result = observe_all(stream, EngineSettings(analysis_interval=INTERVAL, families_off=frozenset({"payment"})))
    _, kind, _, _ = result.engine.evidence.incidences()
    assert int(Evidence.PAYMENT) not in set(kind.tolist())
    assert int(Evidence.TEMPLATE) in set(kind.tolist())
    clusters = [d for d in result.detections if d.level == "cluster"]
    assert clusters  # the template still links the campaign
    for detection in clusters:
        assert not any(word.startswith("payment") for word in detection.evidence)
        assert detection.features["cluster.shared_payment_share"] == 0.0
        assert "hydra-pooled-identity-cluster" not in {h.rule_id for h in detection.hits}
    # the campaign is still caught through its traffic, and nobody legitimate is
    hit = covered(result.detections)
    assert set(stream.campaign) <= hit
    assert not hit & set(stream.legit)


def test_run_analyzes_once_more_at_the_end(stream: Stream) -> None:
    engine = Engine(settings=EngineSettings(analysis_interval=INTERVAL))
    engine.load_registry(stream.registry)
    detections = engine.run(stream.batches())
    last_time = float(stream.events.column("time")[-1].as_py())
    assert engine.now == last_time
    assert max(d.at for d in detections) == last_time


def test_hydraguard_detector_flags_the_campaign_through_the_harness(stream: Stream) -> None:
    detector = HydraGuard(EngineSettings(analysis_interval=INTERVAL))
    flags = run_detector(detector, {"accounts": stream.registry}, stream.batches())
    flagged = {f.account_id for f in flags}
    assert flagged == set(stream.campaign)
    assert len(flags) == len(flagged)  # one flag per account: its earliest
    first_event = float(stream.events.column("time")[0].as_py())
    for flag in flags:
        assert flag.flagged_at % INTERVAL == 0 and flag.flagged_at > first_event
        assert 0 < flag.score <= 1
        assert flag.reason


# -- a bystander: a legitimate account that shares one card with the campaign's pool ------------------------------
@pytest.fixture(scope="module")
def bystander_run() -> Observed:
    return observe_all(build_stream(with_bystander=True))


def test_an_active_bystander_is_not_covered_once_the_cluster_has_evidence(bystander_run: Observed) -> None:
    later = [d for d in bystander_run.detections if d.at >= T0 + 6 * INTERVAL]
    assert any(d.level == "cluster" and d.enforcing for d in later)
    assert BYSTANDER not in covered(later)
    clusters = bystander_run.engine.clusters()
    [cluster] = [
        i for i, m in enumerate(clusters.members) if BYSTANDER in {bystander_run.engine.accounts.ids[n] for n in m}
    ]
    confirmed, _ = bystander_run.engine._confirmed(clusters.members[cluster], clusters.strength[cluster])
    assert BYSTANDER not in {bystander_run.engine.accounts.ids[n] for n in confirmed.tolist()}


def test_an_active_bystander_is_never_covered(bystander_run: Observed) -> None:
    """The card's owner paid with it 200 days before the pool's accounts signed up with it: no card rule covers it,
    even at the first analysis, when linkage still splits the young campaign by card and its strength equals the
    pool's holders'."""
    engine = bystander_run.engine
    number = engine.accounts.index[BYSTANDER]
    cards = engine._cards()
    assert cards.shared[number] and cards.lead_days[number] == pytest.approx(200 - 1 / 24)
    assert BYSTANDER not in covered(bystander_run.detections)
    assert any(d.level == "cluster" and d.enforcing and d.at == T0 + INTERVAL for d in bystander_run.detections)


def test_the_pool_s_holders_of_the_owner_s_card_are_covered(bystander_run: Observed) -> None:
    """The campaign's accounts that pay with the owner's card lead by nothing: they are challenged for the card,
    and blocked once they harvest reasoning, while the owner is neither."""
    policy = Policy()
    blocked, challenged = set(), set()
    for detection in bystander_run.detections:
        enforcement = policy.plan(detection, detection.at)
        for decision in enforcement.decisions:
            group = enforcement.group[1] if enforcement.group and decision.scope is ScopeKind.GROUP else ()
            targets = set(group) if decision.scope is ScopeKind.GROUP else {decision.value}
            {DecisionType.BLOCK: blocked, DecisionType.CHALLENGE: challenged}.get(decision.type, set()).update(targets)
    holders = {f"acct_hydra{i:02d}" for i in range(0, CAMPAIGN, 3)}  # card_pool0
    assert holders <= challenged and holders <= blocked
    assert BYSTANDER not in challenged | blocked
    assert len(blocked & set(build_stream().campaign)) >= CAMPAIGN // 2


def test_an_owner_of_less_than_30_days_standing_is_challenged_for_the_card_never_blocked() -> None:
    """An owner who signed up 10 days before the pool's accounts did looks, to the registry, like the pool's first
    holder: it is challenged (verification lets it through), not blocked, as before the lead counted."""
    run = observe_all(build_stream(with_bystander=True, bystander_days=10.0))
    assert run.engine._cards().lead_days[run.engine.accounts.index[BYSTANDER]] == pytest.approx(10 - 1 / 24)
    hits = {h.rule_id for d in run.detections for i, h in enumerate(d.hits) if BYSTANDER in d.covered_by(i)}
    assert hits == {"hydra-reasoning-cluster-card"}


# -- between linkages: new accounts join a detected cluster ------------------------------------------------------
REPLACEMENT, NEWCOMER = "acct_hydra_replacement", "acct_newcomer"
JOINED_AT = T0 + 7 * INTERVAL  # after the linkage at T0 + 6 h, before the one at T0 + 12 h


def with_newcomers(stream: Stream) -> Stream:
    """The stream plus a replacement account of the campaign (a card of its own, so nothing links it before its
    first requests: then the campaign's templates, exits and elicitation) and a legitimate account that signs up at
    the same time, sends one of those prompts from one of those exits, and pays with its own card; both first seen
    after a linkage."""
    rows = stream.registry.to_pylist()
    events: list[RequestEvent] = []
    for account, card in ((REPLACEMENT, "card_stolen"), (NEWCOMER, "card_newcomer")):
        rows.append(
            {
                "id": account,
                "org_id": f"org_{account}",
                "signup_at": JOINED_AT - 600,
                "signup_ip": "192.0.2.200",
                "email_domain": f"{account}.example",
                "payment_fingerprint": card,
            }
        )
    for j in range(30):
        time = JOINED_AT + 60 + 120.0 * j
        events.append(
            _event(
                time,
                REPLACEMENT,
                f"org_{REPLACEMENT}",
                10_000_000 + j,
                client_ip=f"100.64.{j % 60}.{j + 1}",
                user_agent="python-httpx/0.27.0",
                message_count=1,
                reasoning_extraction_score=0.9 if j % 10 < 3 else 0.0,
                capability_area=AREAS[j % len(TASKS)],
                template_signature=SIGNATURES[j % len(TASKS)],
            )
        )
        events.append(
            _event(
                time + 30,
                NEWCOMER,
                f"org_{NEWCOMER}",
                20_000_000 + j,
                client_ip="100.64.3.4" if j == 0 else "203.0.113.250",
                user_agent="Mozilla/5.0 Chrome/124.0.6367.91",
                message_count=4,
                reasoning_extraction_score=0.0,
                capability_area="coding" if j == 0 else "writing",
                template_signature=SIGNATURES[0] if j == 0 else f"{j:064x}",
            )
        )
    table = pa.concat_tables([stream.events, events_to_table(events)]).sort_by("time")
    return Stream(pa.Table.from_pylist(rows), table, [], [])


def test_a_new_account_joins_its_detected_cluster_before_the_next_linkage(stream: Stream) -> None:
    run = observe_all(with_newcomers(stream))
    joined = [d for d in run.detections if d.level == "cluster" and REPLACEMENT in d.accounts]
    assert joined
    first = joined[0]
    assert JOINED_AT < first.at <= JOINED_AT + 2 * INTERVAL and first.at % EngineSettings().linkage_interval != 0
    assert set(stream.campaign) <= set(first.accounts) and first.enforcing  # the whole cluster, for the group
    earlier = [d for d in run.detections if d.level == "cluster" and d.at < JOINED_AT and d.enforcing]
    assert first.subject in {d.subject for d in earlier}  # the cluster it joined, under the same id
    assert run.engine.cluster_of[REPLACEMENT] == first.subject
    assert NEWCOMER not in covered(run.detections)
    # the hits it joins under: each covers it only through its own member condition (it elicits, on its own card)
    by_rule = {hit.rule_id: first.covered_by(i) for i, hit in enumerate(first.hits)}
    assert REPLACEMENT in by_rule["hydra-reasoning-cluster"]
    assert REPLACEMENT not in by_rule.get("hydra-reasoning-cluster-card", ())
    assert all(set(accounts) <= set(first.accounts) for accounts in by_rule.values())


def test_a_cluster_keeps_the_id_most_of_its_members_had_ties_to_the_first_member() -> None:
    engine = Engine()
    engine.cluster_of.update({"acct_a": "cl_y", "acct_b": "cl_x", "acct_c": "cl_x", "acct_d": "cl_y"})
    assert engine._cluster_id(("acct_b", "acct_c", "acct_d")) == "cl_x"  # the majority
    assert engine._cluster_id(("acct_a", "acct_b", "acct_e")) == "cl_y"  # a tie: the first member's, not a set's order
    assert engine.cluster_of["acct_e"] == "cl_y"
    assert engine._cluster_id(("acct_new1", "acct_new2")) == "cl_new1"


# -- a proxy account: the campaign's templates and exits, its customers' requests diluting its elicitation ---------
PROXY = "acct_hydra_proxy"


def with_proxy(stream: Stream) -> Stream:
    """The stream plus an established campaign account with a card of its own whose traffic is mostly ordinary
    requests, sent at no fixed second of the minute: of its
    150 requests over the two days, 4 ask for reasoning (every 37th, so its share never reaches 3 %), the rest are the
    campaign's templated tasks from the campaign's exits."""
    rows = [
        *stream.registry.to_pylist(),
        {
            "id": PROXY,
            "org_id": f"org_{PROXY}",
            "signup_at": T0 - 60 * DAY,  # established: newness covers it under no rule
            "signup_ip": "192.0.2.201",
            "email_domain": f"{PROXY}.example",
            "payment_fingerprint": "card_proxy_own",
        },
    ]
    events = [
        _event(
            T0 + 1150.0 * j + 7,
            PROXY,
            f"org_{PROXY}",
            30_000_000 + j,
            client_ip=f"100.64.{j % 60}.{j % 250 + 1}",
            user_agent="python-httpx/0.27.0",
            message_count=1,
            reasoning_extraction_score=0.9 if j % 37 == 36 else 0.0,
            capability_area=AREAS[j % len(TASKS)],
            template_signature=SIGNATURES[j % len(TASKS)],
        )
        for j in range(150)
    ]
    table = pa.concat_tables([stream.events, events_to_table(events)]).sort_by("time")
    return Stream(pa.Table.from_pylist(rows), table, [], [])


def test_a_member_whose_elicitation_is_diluted_is_covered_on_its_own_count(stream: Stream) -> None:
    run = observe_all(with_proxy(stream))
    [number] = [n for n, account in enumerate(run.engine.accounts.ids) if account == PROXY]
    features = run.engine.account_features(np.array([number]))
    assert features["reasoning_requests"][0] == 4 and features["reasoning_share"][0] < 0.05
    assert PROXY in covered([d for d in run.detections if d.level == "cluster"])
    assert not covered(run.detections) & set(stream.legit)
