"""The values of account features (`AccountTable.features`) and cluster features (`Engine.cluster_features`),
hand-computed from small event batches."""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pytest

from hydraguard.accounts.models import Account, AccountStatus
from hydraguard.detect.accounts import AccountTable, distinct_estimate
from hydraguard.detect.engine import Engine, registry_table
from hydraguard.events.schema import RequestEvent
from tests.detect.test_accounts import DAY, event, features_of, table

HOUR = 3600.0


def every_minute(account: str, start: float = 0.0, **values: Sequence[Any]) -> list[RequestEvent]:
    """One request a minute from `start`, the i-th with the i-th of each of `values`."""
    rows = [dict(zip(values, row, strict=True)) for row in zip(*values.values(), strict=True)]
    return [event(start + 60.0 * i, account=account, **fields) for i, fields in enumerate(rows)]


def accounts_fed(events: list[RequestEvent]) -> AccountTable:
    accounts = AccountTable()
    accounts.update(table(events))
    return accounts


# -- account features ---------------------------------------------------------------------------------------------
def test_topic_breadth_counts_areas_with_at_least_five_percent_of_requests() -> None:
    at_bar = ["coding"] * 10 + ["math"] * 9 + ["writing"]  # writing: 1 of 20, exactly 5 %
    below_bar = ["coding"] * 10 + ["math"] * 10 + ["writing"]  # writing: 1 of 21
    accounts = accounts_fed(
        every_minute("at_bar", capability_area=at_bar) + every_minute("below_bar", capability_area=below_bar)
    )
    assert features_of(accounts, "at_bar")["topic_breadth"] == 3.0
    assert features_of(accounts, "below_bar")["topic_breadth"] == 2.0


def test_output_input_ratio_is_completion_over_prompt_tokens() -> None:
    # a refused request reports no tokens: it changes neither side
    long_answers = every_minute("long_answers", prompt_tokens=[100, 300, None], completion_tokens=[500, 700, None])
    short_answers = every_minute("short_answers", prompt_tokens=[400], completion_tokens=[100])
    accounts = accounts_fed(long_answers + short_answers)
    assert features_of(accounts, "long_answers")["output_input_ratio"] == pytest.approx(3.0)
    assert features_of(accounts, "short_answers")["output_input_ratio"] == pytest.approx(0.25)


def test_log_gap_std_is_zero_for_regular_gaps_and_the_spread_of_log_gaps_otherwise() -> None:
    regular = [event(60.0 * i, account="regular") for i in range(10)]
    alternating = [event(t, account="alternating") for t in (0.0, 10.0, 110.0, 120.0, 220.0)]  # 10 s, 100 s, ...
    accounts = accounts_fed(regular + alternating)
    assert features_of(accounts, "regular")["log_gap_std"] == pytest.approx(0.0, abs=1e-6)
    # two log gaps in equal numbers: the std is half their difference
    expected = (math.log1p(100) - math.log1p(10)) / 2
    assert features_of(accounts, "alternating")["log_gap_std"] == pytest.approx(expected)


def test_distinct_user_agents_is_the_linear_counting_estimate_of_the_agents_bitmap() -> None:
    agents = ["curl/8.4.0", "python-httpx/0.27.0", "OpenAI/Python 1.51.0", "Go-http-client/2.0"]
    colliding = ["curl/8.4.0", "Mozilla/5.0 Chrome/124.0.6367.91"]  # the same one of 64 bits
    accounts = accounts_fed(
        every_minute("rotating", user_agent=agents * 3) + every_minute("colliding", user_agent=colliding * 3)
    )
    for account, names, distinct in (("rotating", agents, 4), ("colliding", colliding, 1)):
        bitmap = sum({1 << (zlib.crc32(name.encode()) & 63) for name in names})
        assert int(accounts.ua_bits[accounts.index[account]]) == bitmap
        estimate = features_of(accounts, account)["distinct_user_agents"]
        assert estimate == pytest.approx(distinct_estimate(np.array([bitmap], dtype=np.uint64))[0])
        assert estimate == pytest.approx(distinct, abs=0.2)


def test_active_hour_share_is_hours_with_requests_over_hours_spanned_at_most_one() -> None:
    bursty = [event(t, account="bursty") for t in (0.0, 600.0, 5 * HOUR + 10, 10 * HOUR)]  # hours 0, 5 and 10
    steady = [event(600.0 * i, account="steady") for i in range(61)]  # 11 hours touched over a 10-hour span
    accounts = accounts_fed(bursty + steady)
    assert features_of(accounts, "bursty")["active_hour_share"] == pytest.approx(3 / 10)
    assert features_of(accounts, "steady")["active_hour_share"] == 1.0


def test_first_day_share_counts_requests_less_than_a_day_after_the_first() -> None:
    spread = [event(t, account="spread") for t in (0.0, HOUR, DAY - 1, DAY, 2 * DAY)]
    one_day = [event(t, account="one_day") for t in (0.0, HOUR, DAY - 1)]
    accounts = accounts_fed(spread + one_day)
    assert features_of(accounts, "spread")["first_day_share"] == pytest.approx(3 / 5)
    assert features_of(accounts, "one_day")["first_day_share"] == 1.0


def test_refusal_rate_is_of_all_requests_and_multi_turn_share_of_served_ones() -> None:
    # two of the four served requests go on a conversation; the three refused ones would, but are not served
    mixed = every_minute("mixed", status=[200, 200, 200, 200, 429, 403, 502], message_count=[1, 3, 5, 2, 4, 4, 4])
    single = every_minute("single", status=[200, 200], message_count=[1, 2])
    accounts = accounts_fed(mixed + single)
    mixed_f, single_f = features_of(accounts, "mixed"), features_of(accounts, "single")
    assert (mixed_f["refusal_rate"], mixed_f["multi_turn_share"]) == (pytest.approx(3 / 7), pytest.approx(0.5))
    assert (single_f["refusal_rate"], single_f["multi_turn_share"]) == (0.0, 0.0)


def test_phase_concentration_is_the_busiest_five_second_bin_share() -> None:
    seconds = [2.0] * 6 + [31.0] * 3 + [59.0] * 3  # bins 0, 6 and 11
    edges = [4.9, 4.9, 4.9, 5.0]  # bins 0, 0, 0 and 1
    rounds = [event(60.0 * m + s, account="rounds") for m, s in enumerate(seconds)]
    at_edges = [event(60.0 * m + s, account="at_edges") for m, s in enumerate(edges)]
    accounts = accounts_fed(rounds + at_edges)
    assert features_of(accounts, "rounds")["phase_concentration"] == pytest.approx(6 / 12)
    assert features_of(accounts, "at_edges")["phase_concentration"] == pytest.approx(3 / 4)


def test_a_batch_split_anywhere_gives_the_features_of_the_whole_batch() -> None:
    """Gaps, hour buckets, the first day and the bitmaps carry over from one batch to the next."""
    times = [0.0, 10.0, 110.0, HOUR + 100, HOUR + 110, 2 * HOUR + 5, DAY - 50, DAY + 500, 2 * DAY + 7, 2 * DAY + 17]
    events = [
        event(
            t,
            status=(200, 200, 429)[i % 3],
            message_count=1 + i % 4,
            capability_area=("coding", "math", "writing", None)[i % 4],
            user_agent=("curl/8.4.0", "python-httpx/0.27.0", None)[i % 3],
            client_ip=f"198.51.{i % 2}.{i}",
            prompt_tokens=100 + 10 * i,
            completion_tokens=50 * i,
            reasoning_extraction_score=(0.9, 0.1)[i % 2],
        )
        for i, t in enumerate(times)
    ]
    whole = features_of(accounts_fed(events))
    for cut in range(1, len(events)):
        split = AccountTable()
        split.update(table(events[:cut]))
        split.update(table(events[cut:]))
        assert features_of(split) == pytest.approx(whole), cut


# -- cluster features, from an engine fed with events -------------------------------------------------------------
def engine_fed(events: list[RequestEvent], registry: Iterable[Account] = ()) -> Engine:
    engine = Engine()
    engine.load_registry(registry_table(registry))
    engine.observe(table(events))
    return engine


def cluster_features(engine: Engine, members: list[str]) -> dict[str, float]:
    return engine.cluster_features(np.array([engine.accounts.index[account] for account in members]))


def registered(account: str, signup_at: float) -> Account:
    return Account(id=account, org_id=f"org_{account}", tier="free", status=AccountStatus.ACTIVE, signup_at=signup_at)


def test_phase_sync_is_the_share_of_members_concentrated_in_the_cluster_s_busiest_bin() -> None:
    in_step = [event(60.0 * m + 2, account=f"in_step{i}") for i in range(3) for m in range(20)]  # bin 0
    late = [event(60.0 * m + 32, account="late") for m in range(20)]  # bin 6
    # every second of the minute: each busiest bin is bin 0, but holds only a twelfth of the requests
    spread = [event(60.0 * m + m % 60, account=f"spread{i}") for i in range(3) for m in range(120)]
    engine = engine_fed(in_step + late + spread)
    in_step_ids = [f"in_step{i}" for i in range(3)]
    assert cluster_features(engine, in_step_ids)["phase_sync"] == 1.0
    assert cluster_features(engine, [*in_step_ids, "late"])["phase_sync"] == pytest.approx(3 / 4)
    assert cluster_features(engine, [f"spread{i}" for i in range(3)])["phase_sync"] == 0.0


def test_new_account_share_counts_first_requests_within_new_account_days_of_signup() -> None:
    start = 30 * DAY
    signups = {"fresh": start - DAY, "edge": start - 3 * DAY, "old": start - 10 * DAY}  # "unregistered": none
    events = [event(start, account="edge")]  # exactly three days after signup: still new
    events += [event(start + 60.0 * i, account=a) for i, a in enumerate(("fresh", "old", "unregistered"), 1)]
    events.append(event(start + 5 * DAY, account="fresh"))  # a later request does not make it old
    engine = engine_fed(events, [registered(account, at) for account, at in signups.items()])
    everyone = ["fresh", "edge", "old", "unregistered"]
    days = engine.account_features(np.array([engine.accounts.index[a] for a in everyone]))
    assert days["days_since_signup_at_first_request"].tolist() == pytest.approx(
        [1 + 60 / DAY, 3.0, 10 + 120 / DAY, math.inf]
    )
    assert cluster_features(engine, everyone)["new_account_share"] == pytest.approx(2 / 4)
    assert cluster_features(engine, ["fresh", "edge"])["new_account_share"] == 1.0
    assert cluster_features(engine, ["old", "unregistered"])["new_account_share"] == 0.0


def test_banned_share_counts_members_refused_as_banned_accounts() -> None:
    banned = every_minute("banned", status=[200, 200, 403, 403], refusal_reason=[None, None, *["account_banned"] * 2])
    suspended = every_minute("suspended", status=[403], refusal_reason=["account_suspended"])
    limited = every_minute("limited", status=[429], refusal_reason=["rate_limited:rpm:account"])
    engine = engine_fed(banned + suspended + limited + every_minute("fine", status=[200]))
    assert cluster_features(engine, ["banned", "suspended", "limited", "fine"])["banned_share"] == pytest.approx(1 / 4)
    assert cluster_features(engine, ["suspended", "limited", "fine"])["banned_share"] == 0.0


def test_extraction_area_share_weights_each_member_by_its_served_requests() -> None:
    harvester = every_minute("harvester", capability_area=["coding"] * 30)
    writer = every_minute("writer", capability_area=["writing"] * 5 + ["math"] * 5)  # half extraction areas
    refused = every_minute("refused", capability_area=["agentic"] * 10, status=[429] * 10)  # serves nothing
    engine = engine_fed(harvester + writer + refused)
    # (30 x 1 + 10 x 0.5 + 0 x 1) / 40 served; an unweighted mean would be 0.83
    assert cluster_features(engine, ["harvester", "writer", "refused"])["extraction_area_share"] == pytest.approx(0.875)
    assert cluster_features(engine, ["writer", "refused"])["extraction_area_share"] == pytest.approx(0.5)


def test_cluster_hour_entropy_is_the_members_median() -> None:
    around = [event(h * HOUR + 600, account="around") for h in range(24)]
    office = [event(9 * HOUR + 60.0 * i, account="office") for i in range(10)]
    two_shifts = [event(h * HOUR + 60.0 * i, account="two_shifts") for h in (9, 21) for i in range(5)]
    engine = engine_fed(around + office + two_shifts)
    members = ["around", "office", "two_shifts"]
    # entropies 1, 0 and log 2 / log 24 (two equal hours); their mean would be 0.41
    assert cluster_features(engine, members)["hour_entropy"] == pytest.approx(math.log(2) / math.log(24))
    assert cluster_features(engine, ["around", "office"])["hour_entropy"] == pytest.approx(0.5)


# -- windowed and tier features -----------------------------------------------------------------------------------
def test_recent_features_weigh_about_the_last_day_and_decay_to_now() -> None:
    early = [event(60.0 * i, account="turned", reasoning_extraction_score=0.9) for i in range(100)]
    late = [event(10 * DAY + 60.0 * i, account="turned") for i in range(10)]
    accounts = accounts_fed(early + late)
    latest = 10 * DAY + 540.0
    whole = features_of(accounts, "turned")
    assert whole["requests_per_day"] == pytest.approx(110 / 10, rel=1e-3)
    assert whole["reasoning_share"] == pytest.approx(100 / 110)
    # ten requests in the last ten minutes, a hundred ten days before: e^-10 of those remain
    expected = sum(math.exp((e.time - latest) / DAY) for e in early + late)
    assert whole["recent_requests_per_day"] == pytest.approx(expected)
    assert whole["recent_requests_per_day"] == pytest.approx(10.0, rel=1e-2)
    harvested = sum(math.exp((e.time - latest) / DAY) for e in early)
    assert whole["recent_reasoning_share"] == pytest.approx(harvested / expected)
    assert whole["recent_reasoning_share"] < 1e-3
    a_day_later = accounts.features(np.array([accounts.index["turned"]]), now=latest + DAY)
    assert a_day_later["recent_requests_per_day"][0] == pytest.approx(expected / math.e)
    assert a_day_later["recent_reasoning_share"][0] == pytest.approx(whole["recent_reasoning_share"])


def test_tier_usage_is_the_busiest_day_against_the_tier_s_daily_tokens() -> None:
    day_one = every_minute("free", prompt_tokens=[100_000] * 3, tier=["free"] * 3)
    day_two = every_minute("free", DAY, prompt_tokens=[200_000] * 3, completion_tokens=[50_000] * 3, tier=["free"] * 3)
    refused = every_minute("free", DAY + HOUR, prompt_tokens=[500_000], status=[429], tier=["free"])  # not served
    untiered = every_minute("untiered", prompt_tokens=[100_000])
    engine = engine_fed(day_one + day_two + refused + untiered)
    numbers = np.array([engine.accounts.index[a] for a in ("free", "untiered")])
    features = engine.account_features(numbers)
    assert features["peak_day_tokens"].tolist() == [750_000.0, 100_000.0]
    assert features["tier_usage"][0] == pytest.approx(750_000 / 1_000_000)  # the default free tier: 1 M a day
    assert math.isnan(features["tier_usage"][1])
    engine.settings.tier_tokens_per_day = {"free": 3_000_000.0}
    assert engine.account_features(numbers)["tier_usage"][0] == pytest.approx(0.25)


def test_capability_coverage_counts_the_cluster_s_areas_with_five_percent_of_requests() -> None:
    coder = every_minute("coder", capability_area=["coding"] * 50 + ["writing"] * 5)
    mathematician = every_minute("mathematician", capability_area=["math"] * 45)
    engine = engine_fed(coder + mathematician + every_minute("rare", capability_area=["writing"] * 2))
    assert cluster_features(engine, ["coder", "mathematician"])["capability_coverage"] == 3.0  # writing: 5 of 100
    assert cluster_features(engine, ["mathematician", "rare"])["capability_coverage"] == 1.0  # writing: 2 of 47


def test_replacement_share_counts_members_signed_up_after_a_member_was_banned() -> None:
    banned = every_minute("banned", status=[200, 403], refusal_reason=[None, "account_banned"])  # banned at 60 s
    events = banned + every_minute("veteran", 120.0) + every_minute("replacement", DAY)
    signups = {"banned": -DAY, "veteran": -DAY, "replacement": DAY / 2}
    engine = engine_fed(events, [registered(account, at) for account, at in signups.items()])
    assert cluster_features(engine, ["banned", "veteran", "replacement"])["replacement_share"] == pytest.approx(1 / 3)
    assert cluster_features(engine, ["veteran", "replacement"])["replacement_share"] == 0.0  # no ban among them


def test_top_template_share_is_known_from_the_last_linkage() -> None:
    signature = "0123abcd" * 8
    others = [f"{i:08x}" * 8 for i in range(2)]
    engine = engine_fed(every_minute("templated", template_signature=[signature] * 8 + others))
    number = np.array([engine.accounts.index["templated"]])
    assert engine.account_features(number)["top_template_share"][0] == 0.0  # not linked yet
    engine.analyze(engine.now, link=True)
    assert engine.account_features(number)["top_template_share"][0] == pytest.approx(8 / 10)
