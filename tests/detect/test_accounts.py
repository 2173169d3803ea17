"""Account-level behaviour: the per-account state `AccountTable.update` folds event batches into, and the named
features `AccountTable.features` derives from it."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from hydraguard.detect.accounts import PHASE_BINS, AccountTable, ClientAddresses
from hydraguard.events.schema import RequestEvent, events_to_table

DAY = 86_400.0
_ids = itertools.count()


def event(time: float, account: str | None = "acct_a", **fields: Any) -> RequestEvent:
    values: dict[str, Any] = {"status": 200, "message_count": 1, "client_ip": "203.0.113.7", "user_agent": "curl/8.4.0"}
    values.update(fields)
    return RequestEvent(
        time=time, request_id=f"req_{next(_ids)}", endpoint="/v1/chat/completions", account_id=account, **values
    )


def table(events: list[RequestEvent]) -> pa.Table:
    return events_to_table(sorted(events, key=lambda e: e.time))


def features_of(accounts: AccountTable, account: str = "acct_a") -> dict[str, float]:
    number = np.array([accounts.index[account]])
    return {name: float(values[0]) for name, values in accounts.features(number).items()}


def test_counts_requests_and_served_per_account() -> None:
    accounts = AccountTable()
    events = [event(t) for t in (0, 10, 20)] + [event(t, status=429) for t in (30, 40)]
    events += [event(t, account="acct_b") for t in (5, 15)]
    numbers = accounts.update(table(events))
    assert sorted(accounts.ids) == ["acct_a", "acct_b"]
    assert len(numbers) == 7
    a, b = features_of(accounts, "acct_a"), features_of(accounts, "acct_b")
    assert (a["requests"], a["served"], a["refusal_rate"]) == (5.0, 3.0, pytest.approx(0.4))
    assert (b["requests"], b["served"], b["refusal_rate"]) == (2.0, 2.0, 0.0)


def test_multi_turn_share_counts_conversations_of_three_messages_or_more() -> None:
    accounts = AccountTable()
    accounts.update(table([event(i * 60.0, message_count=m) for i, m in enumerate((1, 2, 3, 5))]))
    assert features_of(accounts)["multi_turn_share"] == pytest.approx(0.5)


def test_reasoning_share_counts_scores_of_one_half_or_more() -> None:
    accounts = AccountTable()
    scores = (0.9, 0.5, 0.49, None, 0.0)
    accounts.update(table([event(i * 60.0, reasoning_extraction_score=s) for i, s in enumerate(scores)]))
    features = features_of(accounts)
    assert features["reasoning_share"] == pytest.approx(2 / 5)
    assert features["reasoning_requests"] == 2


@pytest.mark.parametrize(
    ("feature", "fields"),
    [("reasoning_share", {"reasoning_extraction_score": 0.9}), ("multi_turn_share", {"message_count": 4})],
)
def test_shares_of_served_requests_ignore_refused_ones(feature: str, fields: dict[str, Any]) -> None:
    accounts = AccountTable()
    served = [event(i * 60.0) for i in range(4)]
    refused = [
        event(300.0 + i * 60.0, status=429, refusal_reason="rate_limited:rpm:account", **fields) for i in range(8)
    ]
    accounts.update(table(served + refused))
    share = features_of(accounts)[feature]
    assert 0.0 <= share <= 1.0
    assert share == 0.0


def test_hour_entropy_is_one_for_round_the_clock_use_and_zero_for_one_hour() -> None:
    accounts = AccountTable()
    around = [event(h * 3600.0 + 600, account="around") for h in range(24) for _ in range(3)]
    one_hour = [event(9 * 3600.0 + 50 * i, account="office") for i in range(72)]
    accounts.update(table(around + one_hour))
    assert features_of(accounts, "around")["hour_entropy"] == pytest.approx(1.0)
    assert features_of(accounts, "office")["hour_entropy"] == pytest.approx(0.0, abs=1e-9)


def test_phase_concentration_is_high_in_step_and_low_when_spread() -> None:
    accounts = AccountTable()
    in_step = [event(60.0 * m + m % 5, account="balanced") for m in range(120)]  # seconds 0-4 of each minute
    spread = [event(60.0 * m + m % 60, account="person") for m in range(120)]  # every second of the minute
    accounts.update(table(in_step + spread))
    assert features_of(accounts, "balanced")["phase_concentration"] == 1.0
    assert features_of(accounts, "person")["phase_concentration"] == pytest.approx(1 / PHASE_BINS)


def test_distinct_ips_estimate_is_close_to_the_truth() -> None:
    accounts = AccountTable()
    ips = [f"198.51.{i}.{10 + i}" for i in range(10)]
    rotating = [event(60.0 * i, account="rotating", client_ip=ips[i % 10]) for i in range(50)]
    fixed = [event(60.0 * i, account="fixed", client_ip="192.0.2.1") for i in range(50)]
    accounts.update(table(rotating + fixed))
    rotating_f, fixed_f = features_of(accounts, "rotating"), features_of(accounts, "fixed")
    assert rotating_f["distinct_ips"] == pytest.approx(10, abs=2)
    assert rotating_f["distinct_subnets"] == pytest.approx(10, abs=2)
    assert fixed_f["distinct_ips"] == pytest.approx(1, abs=0.1)
    assert fixed_f["distinct_subnets"] == pytest.approx(1, abs=0.1)


def test_gaps_and_hour_buckets_carry_over_between_batches() -> None:
    times = [0.0, 1800.0, 3700.0, 4000.0, 3 * 3600.0 + 10]  # hours 0, 0, 1, 1, 3
    split = AccountTable()
    split.update(table([event(t) for t in times[:3]]))
    split.update(table([event(t) for t in times[3:]]))
    whole = AccountTable()
    whole.update(table([event(t) for t in times]))
    gaps = np.diff(times)
    for accounts in (split, whole):
        counts = {name: float(values[0]) for name, values in accounts.counts.items()}
        assert counts["gaps"] == 4
        assert counts["log_gap_sum"] == pytest.approx(np.log1p(gaps).sum())
        assert counts["log_gap_sq"] == pytest.approx((np.log1p(gaps) ** 2).sum())
        assert counts["hour_buckets"] == 3
    assert features_of(split) == pytest.approx(features_of(whole))
    assert features_of(split)["active_hour_share"] == pytest.approx(3 / (times[-1] / 3600))  # 3 of ~3 hours


def test_first_day_share_and_requests_per_day() -> None:
    accounts = AccountTable()
    accounts.update(table([event(t) for t in (0.0, 3600.0, 7200.0)]))
    accounts.update(table([event(t) for t in (DAY + 10, 2 * DAY)]))
    f = features_of(accounts)
    assert f["first_day_share"] == pytest.approx(3 / 5)
    assert f["active_days"] == pytest.approx(2.0)
    assert f["requests_per_day"] == pytest.approx(5 / 2)


def test_events_without_an_account_are_ignored() -> None:
    accounts = AccountTable()
    numbers = accounts.update(table([event(0.0), event(1.0, account=None), event(2.0)]))
    assert accounts.ids == ["acct_a"]
    assert numbers.tolist() == [0, 0]
    assert features_of(accounts)["requests"] == 2.0
    assert len(accounts.update(table([event(3.0, account=None)]))) == 0
    assert features_of(accounts)["requests"] == 2.0


def test_the_table_grows_past_its_capacity_and_keeps_state() -> None:
    accounts = AccountTable(capacity=4)
    accounts.update(table([event(0.0, account="acct_0", message_count=3)]))
    accounts.update(table([event(10.0 + i, account=f"acct_{i}") for i in range(1, 10)]))
    assert len(accounts) == 10
    assert features_of(accounts, "acct_0")["multi_turn_share"] == 1.0
    all_requests = accounts.features()["requests"]
    assert all_requests.tolist() == [1.0] * 10
    assert math.isclose(accounts.first_seen[accounts.index["acct_9"]], 19.0)


def test_any_split_of_a_mixed_stream_into_batches_gives_the_same_state() -> None:
    """Every counter, histogram and bitmap is per account and additive across time-ordered batches, whatever the
    accounts' interleaving and the batch boundaries (the engine cuts batches at analysis times)."""
    rng = np.random.default_rng(5)
    events = [
        event(
            float(t),
            account=f"acct_{rng.integers(0, 7)}",
            status=int(rng.choice([200, 200, 200, 429])),
            message_count=int(rng.integers(1, 5)),
            client_ip=f"198.51.{rng.integers(0, 4)}.{rng.integers(0, 40)}",
            user_agent=str(rng.choice(["curl/8.4.0", "OpenAI/Python 1.51.0", "httpx/0.27"])),
            capability_area=str(rng.choice(["coding", "math", "writing", "chit-chat"])),
            reasoning_extraction_score=float(rng.random()),
            prompt_tokens=int(rng.integers(1, 500)),
        )
        for t in np.sort(rng.uniform(0, 3 * DAY, size=400))
    ]
    whole = AccountTable()
    whole.update(table(events))
    split = AccountTable()
    cuts = [0, *sorted(rng.choice(np.arange(1, 400), size=9, replace=False).tolist()), 400]
    for start, end in itertools.pairwise(cuts):
        split.update(table(events[start:end]))
    numbers = np.array([split.index[a] for a in whole.ids])
    expected, got = whole.features(), split.features(numbers)
    for name, values in expected.items():
        assert got[name].tolist() == pytest.approx(values.tolist()), name
    assert whole.ip_bits.tolist()[: len(whole)] == split.ip_bits[numbers].tolist()
    assert whole.ua_bits.tolist()[: len(whole)] == split.ua_bits[numbers].tolist()
    requests = features_of(whole, "acct_3")["requests"]
    assert requests == sum(e.account_id == "acct_3" for e in events)


def test_client_addresses_encode_each_row_s_address_and_its_subnet() -> None:
    rows = ["203.0.113.7", None, "203.0.113.9", "2001:db8:1:2::7", "198.51.100.1", "203.0.113.7"]
    addresses = ClientAddresses.of(pa.array(rows))
    assert [addresses.ips[code] for code in addresses.code] == rows
    subnets = [addresses.subnets[code] for code in addresses.row_subnets()]
    assert subnets == ["203.0.113.0/24", None, "203.0.113.0/24", "2001:db8:1::/48", "198.51.100.0/24", "203.0.113.0/24"]
    only_v4 = ClientAddresses.of(pa.array(["203.0.113.7", "10.1.2.3"]))
    assert [only_v4.subnets[code] for code in only_v4.row_subnets()] == ["203.0.113.0/24", "10.1.2.0/24"]
