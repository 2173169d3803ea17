"""Cross-account linkage: the evidence log and the clusters `link` finds in it, on a small synthetic registry.

Every world here has a background of legitimate small links (couples and flatmates of two orgs sharing a card),
as any real registry does: they give the graph its weight, and none of them may end up in a cluster.
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pytest

from hydraguard.detect.engine import REGISTRY_SCHEMA
from hydraguard.detect.linkage import (
    IP_HOUR_SAMPLE,
    KEPT_VALUES_PER_ACCOUNT,
    PROBATION_DAYS,
    SUBNET_SAMPLE,
    TEMPLATE_BANDS,
    TOP_VALUES_PER_ACCOUNT,
    VALUE_BITS,
    Clusters,
    Evidence,
    EvidenceLog,
    _band_keys,
    _merged,
    _pack,
    _probation,
    _top_of_runs,
    lead_over_other_orgs,
    link,
    shared_across_orgs,
    value_hashes,
)
from hydraguard.detect.request import signature_bands, template_fingerprint
from hydraguard.events.schema import RequestEvent, events_to_table

TEMPLATE = "Solve the task below and show all your work before the final answer. Task: {task} Answer on the last line."
TASKS = [
    "explain why the sky looks blue during the day but red at sunset",
    "describe how a bill becomes a law in a parliamentary system",
    "compare the life cycle of a frog with the life cycle of a butterfly",
    "find the shortest route that visits every city on the map exactly once",
    "summarize the main causes of the first world war for a student",
    "decide whether a whale is a fish or a mammal and say why",
]
_requests = itertools.count()


@dataclass
class World:
    rows: list[dict[str, object]] = field(default_factory=list)
    events: list[RequestEvent] = field(default_factory=list)

    def account(
        self,
        account: str,
        org: str,
        card: str | None,
        domain: str | None = None,
        *,
        device: str | None = None,
        email_pattern: str | None = None,
    ) -> None:
        n = len(self.rows)
        self.rows.append(
            {
                "id": account,
                "org_id": org,
                "signup_at": 0.0,
                "signup_ip": f"10.{n // 250}.{n % 250}.7",
                "email_domain": domain or f"{org}.example",
                "payment_fingerprint": card,
                "signup_device": device,
                "email_pattern": email_pattern,
            }
        )

    def send(self, account: str, text: str, times: int) -> None:
        for _ in range(times):
            n = next(_requests)
            self.events.append(
                RequestEvent(
                    time=float(n),
                    request_id=f"req_{n}",
                    endpoint="/v1/chat/completions",
                    account_id=account,
                    client_ip=f"100.{n % 200}.{n // 200 % 200}.9",
                    template_signature=template_fingerprint(text)[1],
                    status=200,
                )
            )

    def background(self, pairs: int = 20, domain: str | None = None) -> None:
        for i in range(2 * pairs):
            self.account(f"acct_home{i}", f"org_home{i}", f"card_home{i // 2}", domain)

    def campaign(self, accounts: int = 12, domain: str | None = None) -> list[str]:
        ids = [f"acct_hydra{i}" for i in range(accounts)]
        for i, account in enumerate(ids):
            self.account(account, f"org_hydra{i}", f"card_pool{i % 2}", domain)
            for j in range(6):
                self.send(account, TEMPLATE.format(task=TASKS[(i + j) % len(TASKS)]), 1)
        return ids

    def link(self, **kwargs: object) -> tuple[Clusters, list[str], EvidenceLog]:
        registry = pa.Table.from_pylist(self.rows, schema=REGISTRY_SCHEMA)
        ids = registry.column("id").to_pylist()
        number = {account: i for i, account in enumerate(ids)}
        org_number: dict[str, int] = {}
        orgs = np.array([org_number.setdefault(o, len(org_number)) for o in registry.column("org_id").to_pylist()])
        log = EvidenceLog()
        log.observe_registry(np.arange(len(ids)), registry)
        if self.events:
            table = events_to_table(self.events)
            log.observe_events(np.array([number[a] for a in table.column("account_id").to_pylist()]), table)
        return link(log, orgs, **kwargs), ids, log  # type: ignore[arg-type]


def members(clusters: Clusters, ids: list[str]) -> list[set[str]]:
    return [{ids[n] for n in m.tolist()} for m in clusters.members]


def test_accounts_of_unrelated_orgs_sharing_cards_and_a_template_form_one_cluster() -> None:
    world = World()
    world.background()
    hydra = world.campaign()
    clusters, ids, _ = world.link()
    assert members(clusters, ids) == [set(hydra)]
    kinds = {kind for kind, _, _, _ in clusters.evidence(0)}
    assert {Evidence.PAYMENT, Evidence.TEMPLATE} <= kinds
    assert all(clusters.label[ids.index(a)] == 0 for a in hydra)
    assert all(clusters.label[ids.index(a)] == -1 for a in ids if a.startswith("acct_home"))


def test_evidence_values_are_named_for_sharing_as_intel() -> None:
    world = World()
    world.background()
    world.campaign()
    clusters, _, log = world.link()
    named = {(kind, log.name(value)) for kind, value, _, _ in clusters.evidence(0)}
    assert {(Evidence.PAYMENT, "card_pool0"), (Evidence.PAYMENT, "card_pool1")} <= named
    bands = {b for task in TASKS for b in signature_bands(template_fingerprint(TEMPLATE.format(task=task))[1])}
    template_names = {name for kind, name in named if kind is Evidence.TEMPLATE}
    assert template_names and template_names <= bands


def test_accounts_of_one_org_sharing_a_card_do_not_cluster() -> None:
    world = World()
    world.background()
    company = [f"acct_team{i}" for i in range(12)]
    for account in company:
        world.account(account, "org_bigcorp", "card_corporate")
    for i, account in enumerate(company):
        world.send(account, TEMPLATE.format(task=TASKS[i % len(TASKS)]), 3)  # the company's own prompt template
    clusters, ids, log = world.link()
    assert clusters.members == []
    assert (clusters.label == -1).all()
    _, kind, _, _ = log.incidences()
    assert (kind == int(Evidence.PAYMENT)).sum() == len(ids)  # the evidence is there; it is same-org, so ignored


def test_a_freemail_domain_shared_by_everyone_does_not_glue_accounts() -> None:
    world = World()
    world.background(domain="gmail.com")
    for i in range(20):
        world.account(f"acct_solo{i}", f"org_solo{i}", f"card_solo{i}", "gmail.com")
    hydra = world.campaign(domain="gmail.com")
    clusters, ids, _ = world.link()
    assert members(clusters, ids) == [set(hydra)]
    assert Evidence.EMAIL_DOMAIN not in {kind for kind, _, _, _ in clusters.evidence(0)}
    # the cap is what keeps it out: without it, the domain links everyone into one cluster
    uncapped, _, _ = world.link(max_share={})
    assert any(len(m) > len(hydra) and any(a.startswith("acct_solo") for a in m) for m in members(uncapped, ids))


def test_a_bystander_sharing_one_value_links_more_weakly_than_members() -> None:
    world = World()
    world.background()
    hydra = world.campaign()
    world.account("acct_bystander", "org_bystander", "card_pool0")  # bought a card from the same pool, once
    world.send("acct_bystander", "What should I cook tonight with leeks, potatoes and some cream?", 5)
    clusters, ids, _ = world.link()
    [cluster] = [i for i, m in enumerate(members(clusters, ids)) if "acct_bystander" in m]
    strength = dict(zip((ids[n] for n in clusters.members[cluster].tolist()), clusters.strength[cluster], strict=True))
    assert set(hydra) <= set(strength)
    assert strength["acct_bystander"] < min(strength[a] for a in hydra)


def test_a_template_seen_once_per_account_is_not_evidence() -> None:
    world = World()
    world.background()
    for i in range(12):
        world.account(f"acct_user{i}", f"org_user{i}", f"card_user{i}")
        world.send(f"acct_user{i}", TEMPLATE.format(task=TASKS[0]), 1)
    clusters, ids, log = world.link()
    assert clusters.members == []
    _, kind, _, _ = log.incidences()
    assert (kind == int(Evidence.TEMPLATE)).sum() == 0  # on probation: each account used it once
    for i in range(12):  # used again: now it is evidence, and it links them
        world.send(f"acct_user{i}", TEMPLATE.format(task=TASKS[0]), 1)
    twice, _, log = world.link()
    assert members(twice, ids) == [{f"acct_user{i}" for i in range(12)}]
    _, kind, _, counts = log.incidences()
    assert counts[kind == int(Evidence.TEMPLATE)].tolist() == [2] * 12 * TEMPLATE_BANDS


def test_a_template_on_probation_is_forgotten_unless_used_again_within_the_probation() -> None:
    key = np.array([42], dtype=np.uint64)
    log = EvidenceLog()
    log.add(_pack(np.array([0]), Evidence.TEMPLATE, key), time=0.0)
    log.compact()
    log.add(_pack(np.array([1]), Evidence.TEMPLATE, key), time=0.0)
    log.compact()
    log.add(_pack(np.array([0]), Evidence.TEMPLATE, key), time=(PROBATION_DAYS - 1) * 86_400.0)  # in time
    log.compact()
    log.add(_pack(np.array([1]), Evidence.TEMPLATE, key), time=(PROBATION_DAYS + 1) * 86_400.0)  # too late
    log.compact()
    account, _, _, counts = log.incidences()
    assert account.tolist() == [0] and counts.tolist() == [2]


def test_probation_keeps_the_unexpired_drops_the_repeated_and_restarts_the_expired() -> None:
    once = np.array([10, 20, 30, 40], dtype=np.uint64)
    once_day = np.array([5, 1, 5, 1])  # 20 and 40 are from day 1: expired on day 4 with a 3-day probation
    new = np.array([15, 30, 40, 50], dtype=np.uint64)
    counts = np.array([1, 1, 1, 3])
    template = np.array([True, True, True, False])
    kept, kept_day, again = _probation(once, once_day, new, counts, template, 4, 1)
    assert kept.tolist() == [10, 15, 40]  # 15 starts; 30 leaves (used again); 40 starts over; 50 is no template
    assert kept_day.tolist() == [5, 4, 4]
    assert again.tolist() == [False, True, False, False]
    assert counts.tolist() == [1, 2, 1, 3]  # the use on probation counts


def test_merged_interleaves_two_sorted_key_sets_with_their_values() -> None:
    held, new = np.array([2, 5, 9], dtype=np.uint64), np.array([1, 6], dtype=np.uint64)
    keys, values = _merged(held, np.array([20, 50, 90]), new, np.array([1, 6]))
    assert keys.tolist() == [1, 2, 5, 6, 9] and values.tolist() == [1, 20, 50, 6, 90]


def test_each_account_keeps_its_most_used_values_of_a_kind() -> None:
    log = EvidenceLog()
    many = np.arange(KEPT_VALUES_PER_ACCOUNT + 50, dtype=np.uint64)
    log.add(_pack(np.zeros(len(many), dtype=np.int64), Evidence.CLIENT_SUBNET, many))
    log.add(_pack(np.zeros(3, dtype=np.int64), Evidence.CLIENT_SUBNET, many[-3:]))  # used twice
    log.compact()
    _, _, value, counts = log.incidences()
    assert len(value) == KEPT_VALUES_PER_ACCOUNT
    assert counts.tolist().count(2) == 3  # the most used are kept; then the lowest hashes, the same for everyone
    kept = value & np.uint64((1 << VALUE_BITS) - 1)
    assert sorted(kept[counts == 1].tolist()) == list(range(KEPT_VALUES_PER_ACCOUNT - 3))


def test_evidence_log_deduplicates_pairs_and_counts_requests() -> None:
    world = World()
    world.account("acct_a", "org_a", "card_1")
    world.account("acct_b", "org_b", None)  # no card on file: no payment evidence
    world.send("acct_a", "Hello there, how are you today?", 3)
    _, _, log = world.link()
    account, kind, value, counts = log.incidences()
    payment = kind == int(Evidence.PAYMENT)
    assert account[payment].tolist() == [0]
    template = kind == int(Evidence.TEMPLATE)
    assert (account[template] == 0).all()
    assert counts[template].tolist() == [3] * int(template.sum())
    assert len(np.unique(value)) == len(value)  # one row per distinct (account, value)


def test_compaction_merges_batches_into_sorted_distinct_pairs_with_summed_counts() -> None:
    rng = np.random.default_rng(7)
    sizes = rng.integers(1, 400, size=12)
    batches = [
        _pack(rng.integers(0, 40, n), Evidence.EMAIL_DOMAIN, rng.integers(0, 30, n).astype(np.uint64)) for n in sizes
    ]
    log = EvidenceLog()
    for batch in batches:
        log.add(batch)
        if rng.random() < 0.5:
            log.compact()
    log.compact()
    expected, expected_counts = np.unique(np.concatenate(batches), return_counts=True)
    assert log.pairs.tolist() == expected.tolist()
    assert log.counts.tolist() == expected_counts.tolist()


def test_top_per_account_keeps_each_account_kinds_most_repeated_values() -> None:
    rng = np.random.default_rng(11)
    log = EvidenceLog()
    accounts = rng.integers(0, 6, size=3_000)
    kinds = rng.choice([int(Evidence.TEMPLATE), int(Evidence.CLIENT_SUBNET)], size=3_000)
    hashes = rng.integers(0, 60, size=3_000).astype(np.uint64)
    for a, k, h in zip(accounts.tolist(), kinds.tolist(), hashes.tolist(), strict=True):
        log.add(_pack(np.array([a]), Evidence(k), np.array([h], dtype=np.uint64)))
    account, kind, _, counts = log.incidences()
    top = log.top_per_account()
    for a, k in itertools.product(range(6), (int(Evidence.TEMPLATE), int(Evidence.CLIENT_SUBNET))):
        group = (account == a) & (kind == k)
        assert top[group].sum() == min(TOP_VALUES_PER_ACCOUNT, group.sum())
        if group.sum() > TOP_VALUES_PER_ACCOUNT:  # nothing left out is repeated more than something kept
            assert counts[group & ~top].max() <= counts[group & top].min()


def test_top_of_runs_breaks_ties_in_pair_order_and_ranks_counts_as_32_bit() -> None:
    """Against the definition: per run, stable order by request count (saturating at 2^32 - 1), the first `top`."""
    rng = np.random.default_rng(5)
    for _ in range(50):
        size = int(rng.integers(0, 400))
        groups = np.sort(rng.integers(0, 8, size)).astype(np.uint64)
        pairs = (groups << np.uint64(VALUE_BITS)) | np.arange(size, dtype=np.uint64)
        counts = rng.choice(np.array([1, 2, 3, (1 << 32) - 1, 1 << 32, 1 << 40]), size)
        for top in (1, 5, TOP_VALUES_PER_ACCOUNT):
            expected = np.zeros(size, dtype=bool)
            for group in np.unique(groups).tolist():
                run = np.flatnonzero(groups == group).tolist()
                ranked = sorted(run, key=lambda i: (-min(int(counts[i]), (1 << 32) - 1), i))
                expected[ranked[:top]] = True
            assert _top_of_runs(pairs, counts, top).tolist() == expected.tolist()


def test_linkage_reads_the_top_incidences() -> None:
    rng = np.random.default_rng(3)
    log = EvidenceLog()
    for _ in range(2_000):
        log.add(_pack(rng.integers(0, 4, 1), Evidence.CLIENT_SUBNET, rng.integers(0, 50, 1).astype(np.uint64)))
    top = log.top_per_account()
    assert 0 < top.sum() < len(top)
    every, chosen = log.incidences(), log.incidences(top=True)
    assert all(np.array_equal(a[top], b) for a, b in zip(every, chosen, strict=True))


def test_a_value_is_shared_across_orgs_only_when_two_orgs_hold_it() -> None:
    value = np.array([5, 5, 5, 7, 7, 9, 11, 11], dtype=np.uint64)
    org = np.array([1, 1, 1, 2, 3, 4, 6, 6])
    assert shared_across_orgs(value, org).tolist() == [False, False, False, True, True, False, False, False]
    assert shared_across_orgs(np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)).tolist() == []


def test_a_value_s_first_org_leads_by_the_time_until_another_org_takes_it_up() -> None:
    nan = float("nan")
    value = np.array([5, 5, 5, 5, 7, 7, 9, 11, 11, 13, 13], dtype=np.uint64)
    org = np.array([1, 2, 1, 3, 4, 4, 5, 6, 7, 8, 9])
    since = np.array([100.0, 400.0, 250.0, 300.0, 0.0, 50.0, 0.0, 10.0, nan, nan, 60.0])
    # 5: org 1 first (100), org 3 next at 300: its accounts lead by 200 and 50; 7 and 9: no other org holds them;
    # 11: the other holder's time is unknown, so it may have been first; 13: an unknown holder has no lead itself
    lead = lead_over_other_orgs(value, org, since)
    assert lead.tolist() == [200.0, 0.0, 50.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    # the order of the elements does not matter
    order = np.random.default_rng(1).permutation(len(value))
    assert np.array_equal(lead_over_other_orgs(value[order], org[order], since[order]), lead[order])
    assert lead_over_other_orgs(np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64), np.zeros(0)).size == 0


@pytest.mark.parametrize("damaged", ["not-a-signature", "ABCDEF01" * 8, "0123abcd" * 3, ""])
def test_a_damaged_template_signature_carries_no_evidence_and_breaks_nothing(damaged: str) -> None:
    world = World()
    world.background()
    for i in range(12):
        world.account(f"acct_user{i}", f"org_user{i}", f"card_user{i}")
        world.send(f"acct_user{i}", TEMPLATE.format(task=TASKS[0]), 2)
    for event in world.events[-6:]:  # both requests of acct_user9, 10 and 11
        event.template_signature = damaged
    clusters, ids, log = world.link()
    assert members(clusters, ids) == [{f"acct_user{i}" for i in range(9)}]  # the intact signatures still link
    _, kind, _, counts = log.incidences()
    assert counts[kind == int(Evidence.TEMPLATE)].sum() == (24 - 6) * TEMPLATE_BANDS


def test_band_keys_are_read_from_the_signature_s_leading_hex_digits_of_any_slice_or_chunking() -> None:
    good = "0123abcd" + "ffffffff" + "00000001" + "89abcdef" + "deadbeef" * 4
    signatures = pa.array([good, None, "ABCDEF01" * 8, good[:31], "0123abcd" * 3 + "0123abcz", "é" * 40, good])
    want_signed = [True, False, False, False, False, False, True]
    want_keys = [0x0123ABCD, (1 << 32) | 0xFFFFFFFF, (2 << 32) | 1, (3 << 32) | 0x89ABCDEF]
    signed, keys = _band_keys(signatures, 4)
    assert signed.tolist() == want_signed
    assert keys.tolist() == [want_keys, want_keys]
    sliced, keys = _band_keys(signatures.slice(3), 4)
    assert sliced.tolist() == want_signed[3:]
    assert keys.tolist() == [want_keys]
    chunked, keys = _band_keys(pa.chunked_array([signatures.slice(0, 2), signatures.slice(2)]), 4)
    assert chunked.tolist() == want_signed
    assert keys.shape == (2, 4)
    nothing, keys = _band_keys(pa.array([None, None], pa.string()), 4)
    assert nothing.tolist() == [False, False]
    assert keys.shape == (0, 4)


def test_most_shared_counts_the_members_one_value_of_a_kind_links() -> None:
    world = World()
    world.background()
    hydra = world.campaign()  # cards alternate between two pools: six members per card
    clusters, ids, _ = world.link()
    assert members(clusters, ids) == [set(hydra)]
    assert clusters.most_shared(0, Evidence.PAYMENT) == 6
    assert clusters.most_shared(0, Evidence.TEMPLATE) == len(hydra)  # one skeleton, whatever the task
    assert clusters.most_shared(0, Evidence.EMAIL_DOMAIN) == 0  # each org its own domain: nothing links


def test_top_counts_are_each_account_s_most_used_value_of_a_kind() -> None:
    world = World()
    for account in ("acct_repeats", "acct_varies", "acct_silent"):
        world.account(account, f"org_{account}", None)
    world.send("acct_repeats", TEMPLATE.format(task=TASKS[0]), 5)
    world.send("acct_repeats", "What is the capital of France?", 2)
    for task in TASKS[:3]:
        world.send("acct_varies", f"Please {task}, in plain words.", 2)
    _, ids, log = world.link()
    top = log.top_counts(Evidence.TEMPLATE, len(ids))
    assert top[ids.index("acct_repeats")] == 5
    assert top[ids.index("acct_varies")] == 2
    assert top[ids.index("acct_silent")] == 0


@pytest.mark.parametrize(
    ("kind", "column", "rare", "popular"),
    [
        (
            Evidence.TLS_FINGERPRINT,
            "tls_fingerprint",
            "t13d1516h2_8daaf6152771_e5627efa2ab1",
            "t13d1517h2_8daaf6152771_b0da82dd1658",
        ),
        (Evidence.SAMPLING, "sampling_fingerprint", "sp_5f0c2a9e7b1d4c33", "sp_0d1e2f3a4b5c6d7e"),
    ],
)
def test_a_rare_client_value_links_and_a_popular_one_does_not(
    kind: Evidence, column: str, rare: str, popular: str
) -> None:
    """A TLS fingerprint or parameter set links the accounts of one tool; a popular browser's or SDK's defaults do
    not."""
    world = World()
    world.background(pairs=250)  # values on more than 2 % of the linked accounts are dropped: a large world
    tooling = [f"acct_tool{i}" for i in range(8)]
    for i, account in enumerate(tooling):
        world.account(account, f"org_tool{i}", None)
    for account in [*tooling, *(row["id"] for row in world.rows[:60])]:
        for _ in range(2):
            n = next(_requests)
            world.events.append(
                RequestEvent(
                    time=float(n),
                    request_id=f"req_{n}",
                    endpoint="/v1/chat/completions",
                    account_id=str(account),
                    status=200,
                    **{column: rare if account in tooling else popular},
                )
            )
    clusters, ids, log = world.link()
    assert members(clusters, ids) == [set(tooling)]  # the popular value, on 60 accounts, glues no one
    assert {kind for kind, _, _, _ in clusters.evidence(0)} == {kind}
    value = clusters.evidence(0)[0][1]
    assert log.name(value) == rare
    uncapped, _, _ = world.link(max_share={})  # without the cap the popular value's holders would form a cluster
    assert any(set(found) - set(tooling) for found in members(uncapped, ids))


def test_requests_without_a_tls_fingerprint_add_no_evidence() -> None:
    log = EvidenceLog()
    table = events_to_table(
        [RequestEvent(time=1.0, request_id="req_a", endpoint="/v1/chat/completions", account_id="acct_a", status=200)]
    )
    log.observe_events(np.array([0]), table, frozenset({Evidence.TLS_FINGERPRINT}))
    assert len(log.incidences()[0]) == 0


def test_requests_without_a_client_ip_share_no_subnet() -> None:
    sampled = next(
        f"100.64.{i}.9" for i in range(256) if value_hashes([f"100.64.{i}.0/24"])[0] % np.uint64(SUBNET_SAMPLE) == 0
    )
    events = [
        RequestEvent(
            time=1.0, request_id=f"req_{n}", endpoint="/v1/chat/completions", account_id=f"acct_{n}", client_ip=ip
        )
        for n, ip in enumerate([None, None, sampled])
    ]
    log = EvidenceLog()
    log.observe_events(np.arange(3), events_to_table(events), frozenset({Evidence.CLIENT_SUBNET}))
    account, _, value, _ = log.incidences()
    assert account.tolist() == [2]
    assert log.name(int(value[0])) == sampled.rsplit(".", 1)[0] + ".0/24"


def test_values_of_reads_held_and_pending_pairs_of_the_wanted_accounts_only() -> None:
    log = EvidenceLog()
    log.add(_pack(np.array([1, 2, 7]), Evidence.PAYMENT, np.array([11, 12, 17], dtype=np.uint64)))
    log.compact()
    log.add(_pack(np.array([2, 3, 900]), Evidence.PAYMENT, np.array([22, 13, 19], dtype=np.uint64)))
    account, value = log.values_of(np.array([2, 3, 2]))
    assert account.tolist() == [2, 2, 3]
    assert (value & np.uint64((1 << VALUE_BITS) - 1)).tolist() == [12, 22, 13]


def test_accounts_signed_up_from_one_device_cluster_without_cards_or_templates() -> None:
    world = World()
    world.background(pairs=250)
    for i, row in enumerate(world.rows):
        row["signup_device"] = f"device_home{i}"  # every household its own phone
    farm = [f"acct_farm{i}" for i in range(10)]
    for i, account in enumerate(farm):
        world.account(account, f"org_farm{i}", None, device="device_farm")
    clusters, ids, log = world.link()
    assert members(clusters, ids) == [set(farm)]
    assert {kind for kind, _, _, _ in clusters.evidence(0)} == {Evidence.SIGNUP_DEVICE}
    assert [log.name(value) for _, value, _, _ in clusters.evidence(0)] == ["device_farm"]
    # without device evidence (the "client" family off) nothing links them
    kinds = frozenset(Evidence) - {Evidence.SIGNUP_DEVICE}
    log = EvidenceLog()
    log.observe_registry(np.arange(len(ids)), pa.Table.from_pylist(world.rows, schema=REGISTRY_SCHEMA), kinds)
    assert not (log.incidences()[1] == int(Evidence.SIGNUP_DEVICE)).any()


def test_numbered_addresses_of_one_shape_link_and_a_common_shape_does_not() -> None:
    world = World()
    world.background(pairs=250)
    for row in world.rows[:40]:
        row["email_pattern"] = "shape_info#"  # `info1@`, `info2@`...: common, on 40 of 512 accounts (over 2 %)
    burst = [f"acct_burst{i}" for i in range(8)]
    for i, account in enumerate(burst):
        world.account(account, f"org_burst{i}", None, "mail.example", email_pattern="shape_distill_user#")
    clusters, ids, _ = world.link()
    assert members(clusters, ids) == [set(burst)]
    assert Evidence.EMAIL_PATTERN in {kind for kind, _, _, _ in clusters.evidence(0)}
    uncapped, _, _ = world.link(max_share={})  # the cap is what keeps the common shape's holders apart
    assert any(len(found & {str(r["id"]) for r in world.rows[:40]}) > 2 for found in members(uncapped, ids))


def test_a_registry_without_device_or_address_shape_columns_still_gives_its_other_evidence() -> None:
    world = World()
    world.account("acct_a", "org_a", "card_x", device="device_a", email_pattern="shape_a")
    full = pa.Table.from_pylist(world.rows, schema=REGISTRY_SCHEMA)
    log = EvidenceLog()
    log.observe_registry(np.arange(1), full.drop_columns(["signup_device", "email_pattern"]))
    assert sorted(log.incidences()[1].tolist()) == [Evidence.PAYMENT, Evidence.SIGNUP_SUBNET, Evidence.EMAIL_DOMAIN]
    log = EvidenceLog()
    log.observe_registry(np.arange(1), full)
    assert {Evidence.SIGNUP_DEVICE, Evidence.EMAIL_PATTERN} <= set(log.incidences()[1].tolist())


def _hourly_ips(count: int) -> list[str]:
    """Client IPs whose same-hour uses are sampled (CRC-32 0 mod IP_HOUR_SAMPLE), in subnets that are sampled too."""
    ips = (f"100.{i // 256}.{i % 256}.9" for i in range(65_536))
    return [
        ip
        for ip in ips
        if zlib.crc32(ip.encode()) % IP_HOUR_SAMPLE == 0
        and value_hashes([ip.rsplit(".", 1)[0] + ".0/24"])[0] % np.uint64(SUBNET_SAMPLE) == 0
    ][:count]


def test_accounts_on_one_ip_in_the_same_hour_link_and_a_week_apart_do_not() -> None:
    world = World()
    world.background()
    exits = _hourly_ips(8)
    proxied = [f"acct_proxy{i}" for i in range(8)]
    residents = [f"acct_resident{i}" for i in range(8)]  # the exits' earlier tenants, a week before
    for account in [*proxied, *residents]:
        world.account(account, f"org_{account}", None)
    week = 7 * 86_400.0
    for hour in range(6):
        for account in proxied:  # the proxy network's exits of the hour, shared by its accounts
            for ip in (exits[hour], exits[hour + 1]):
                n = next(_requests)
                world.events.append(
                    RequestEvent(
                        time=week + hour * 3600.0 + n % 60,
                        request_id=f"req_{n}",
                        endpoint="/v1/chat/completions",
                        account_id=account,
                        client_ip=ip,
                        status=200,
                    )
                )
    for i, account in enumerate(residents):
        for hour in range(6):
            n = next(_requests)
            world.events.append(
                RequestEvent(
                    time=hour * 3600.0 + i * 86_400 / 8,
                    request_id=f"req_{n}",
                    endpoint="/v1/chat/completions",
                    account_id=account,
                    client_ip=exits[i],
                    status=200,
                )
            )
    world.events.sort(key=lambda e: e.time)
    # this world is too small for the 2 % cap (every value here is on more than 2 % of the linked accounts); the
    # background's cards give the graph the rest of a registry to be a community in
    clusters, ids, log = world.link(weights={Evidence.PAYMENT: 3.0, Evidence.IP_HOUR: 1.0}, max_share={})
    assert members(clusters, ids) == [set(proxied)]
    kind, value, _, _ = clusters.evidence(0)[0]
    assert kind is Evidence.IP_HOUR and kind.label == "client IP in one hour"
    ip, _, hour = log.name(value).partition(" at ")
    assert ip in exits and hour.startswith("1970-01-08T0") and hour.endswith("h UTC")
    # over the whole log the same exits link the residents too: the hour is what tells them apart
    whole_log, _, _ = world.link(weights={Evidence.PAYMENT: 3.0, Evidence.CLIENT_SUBNET: 1.0}, max_share={})
    assert any(found & set(residents) for found in members(whole_log, ids))
