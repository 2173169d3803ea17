"""An account's features beside the typical account's: detection's numbers, and the words and bars shown."""

from __future__ import annotations

import pyarrow as pa
import pytest

from hydraguard.console.features import SHOWN, FeatureRow, Shown, account_features
from hydraguard.detect.accounts import EVENT_COLUMNS, AccountTable
from hydraguard.events.schema import ARROW_SCHEMA

SHARE = Shown("reasoning_share", "reasoning", "share")
COUNT = Shown("distinct_ips", "IPs", "count")


def _events(rows: list[tuple[str, float, str]]) -> pa.Table:
    """(account, time, client ip) per served request."""
    schema = pa.schema([ARROW_SCHEMA.field(c) for c in EVENT_COLUMNS])
    columns = {name: [None] * len(rows) for name in EVENT_COLUMNS}
    columns["account_id"] = [r[0] for r in rows]
    columns["time"] = [r[1] for r in rows]
    columns["client_ip"] = [r[2] for r in rows]
    columns["status"] = [200] * len(rows)
    columns["message_count"] = [1] * len(rows)
    return pa.table(columns, schema=schema)


def test_values_are_detections_and_typical_is_the_median_outside_campaigns() -> None:
    rows = [("a", 10.0 + i, f"10.0.{i}.1") for i in range(6)]  # six subnets
    rows += [(f"legit{n}", 20.0 + n, "192.0.2.1") for n in range(3) for _ in range(2)]
    rows += [("member", 30.0, f"10.9.{i}.1") for i in range(9)]  # many addresses, but in a campaign
    events = _events(sorted(rows, key=lambda r: r[1]))
    profile = account_features(events, "a", campaign_accounts={"member"})
    assert profile.compared_with == 3
    assert [row.shown for row in profile.rows] == list(SHOWN)
    table = AccountTable()
    table.update(events)
    expected = table.features()
    by_name = {row.shown.name: row for row in profile.rows}
    assert by_name["distinct_subnets"].value == expected["distinct_subnets"][table.index["a"]]
    assert by_name["requests"].value == 6 and by_name["requests"].typical == 2
    assert by_name["distinct_subnets"].typical == pytest.approx(1, abs=0.02)  # not the member's nine


def test_an_account_without_events_has_no_rows() -> None:
    profile = account_features(_events([("other", 1.0, "192.0.2.1")]), "quiet", campaign_accounts=())
    assert profile.rows == [] and profile.compared_with == 1


@pytest.mark.parametrize(
    ("shown", "value", "typical", "words", "unusual"),
    [
        (SHARE, 0.5, 0.0, "far above typical", True),  # a typical zero: no "50×" from dividing by the floor
        (SHARE, 0.4, 0.1, "far above typical (4×)", True),
        (SHARE, 0.18, 0.1, "above typical", False),
        (SHARE, 0.1, 0.1, "typical", False),
        (SHARE, 0.005, 0.0, "typical", False),  # both below 1 %: none
        (SHARE, 0.02, 0.1, "below typical", False),
        (COUNT, 40, 4, "far above typical (10×)", True),
        (COUNT, 1, None, "nothing to compare with", False),
    ],
)
def test_comparison_in_words(shown: Shown, value: float, typical: float | None, words: str, unusual: bool) -> None:
    row = FeatureRow(shown, value, typical)
    assert row.comparison == words
    assert row.unusual is unusual


def test_bars_and_text() -> None:
    share = FeatureRow(SHARE, 0.25, 0.5)
    assert (share.bar_percent, share.typical_percent) == (25.0, 50.0)  # shares on a 0-100 % scale
    assert (share.value_text, share.typical_text) == ("25%", "50%")
    count = FeatureRow(COUNT, 3, 4)
    assert (count.bar_percent, count.typical_percent) == (37.5, 50.0)  # the typical mark at most halfway
    big = FeatureRow(COUNT, 1_200, 4)
    assert (big.bar_percent, big.value_text) == (100.0, "1,200")
    assert FeatureRow(SHARE, -1e-17, None).value_text == "0%"
    assert FeatureRow(SHARE, 0.1, None).typical_percent is None
