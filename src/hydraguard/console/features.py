"""An account's detection features beside the typical account's, for the console's account page.

The features come from detection's own code (`detect.accounts.AccountTable` fed the event log), so the page shows
the numbers the rules read. "Typical" is the median over the log's other accounts that are in no open or confirmed
campaign: this deployment's legitimate base rate, measured on its own traffic rather than assumed.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa

from hydraguard.detect.accounts import AccountTable

FAR_ABOVE = 3.0  # times the typical value: what the page marks for an analyst's eye
ABOVE = 1.5


@dataclass(frozen=True)
class Shown:
    name: str  # as rules name it: account.<name>
    words: str
    kind: Literal["share", "count"]


SHOWN = (
    Shown("requests", "Requests", "count"),
    Shown("served", "Requests served", "count"),
    Shown("reasoning_share", "Served requests asking for the model's hidden reasoning", "share"),
    Shown("reasoning_requests", "Requests asking for the model's hidden reasoning that were served", "count"),
    Shown("extraction_area_share", "Requests on coding, agentic work, reasoning or math", "share"),
    Shown("multi_turn_share", "Served requests that continue a conversation", "share"),
    Shown("hour_entropy", "Spread over the hours of the day (100 %: round the clock)", "share"),
    Shown("phase_concentration", "Requests sent in the same 5 seconds of each minute (machine dispatch)", "share"),
    Shown("distinct_ips", "Client IP addresses", "count"),
    Shown("distinct_subnets", "Client subnets", "count"),
    Shown("distinct_user_agents", "Client programs (user agents)", "count"),
    Shown("intel_share", "Requests matching threat intelligence", "share"),
    Shown("refusal_rate", "Requests refused", "share"),
)


@dataclass(frozen=True)
class FeatureRow:
    shown: Shown
    value: float
    typical: float | None  # None: no account outside campaigns to compare with

    def _text(self, number: float) -> str:
        number = number if number > 0 else 0.0  # none is negative; rounding can leave a -0.0 that prints "-0%"
        return f"{number:.0%}" if self.shown.kind == "share" else f"{number:,.0f}"

    @property
    def value_text(self) -> str:
        return self._text(self.value)

    @property
    def typical_text(self) -> str:
        return "-" if self.typical is None else self._text(self.typical)

    @property
    def _floor(self) -> float:
        """Below this a value counts as none (1 % of a share, one of a count), so that a typical zero does not
        make every value infinitely far above it."""
        return 0.01 if self.shown.kind == "share" else 1.0

    @property
    def ratio(self) -> float | None:
        if self.typical is None:
            return None
        return max(self.value, self._floor) / max(self.typical, self._floor)

    @property
    def comparison(self) -> str:
        ratio = self.ratio
        if ratio is None or self.typical is None:
            return "nothing to compare with"
        if ratio >= FAR_ABOVE:
            return f"far above typical ({ratio:.0f}×)" if self.typical >= self._floor else "far above typical"
        if ratio >= ABOVE:
            return "above typical"
        if ratio <= 1 / ABOVE:
            return "below typical"
        return "typical"

    @property
    def unusual(self) -> bool:
        return self.ratio is not None and self.ratio >= FAR_ABOVE

    @property
    def _scale(self) -> float:
        if self.shown.kind == "share":
            return 1.0
        return max(self.value, 2 * (self.typical or 0.0), 1.0)  # the typical mark at most halfway along

    @property
    def bar_percent(self) -> float:
        return round(100 * min(self.value / self._scale, 1.0), 1)

    @property
    def typical_percent(self) -> float | None:
        return None if self.typical is None else round(100 * min(self.typical / self._scale, 1.0), 1)


@dataclass(frozen=True)
class Profile:
    rows: list[FeatureRow]  # empty when the account sent no request
    compared_with: int  # accounts the typical values are the median of


def account_features(events: pa.Table, account_id: str, campaign_accounts: Collection[str]) -> Profile:
    """The shown features of one account in `events` (detection's `EVENT_COLUMNS`, by time) beside the median of
    the other accounts not in `campaign_accounts`."""
    table = AccountTable()
    table.update(events)
    others = np.array(
        [n for account, n in table.index.items() if account != account_id and account not in campaign_accounts],
        dtype=np.int64,
    )
    mine = table.index.get(account_id)
    if mine is None:
        return Profile([], len(others))
    features = table.features()
    rows = [
        FeatureRow(
            shown,
            float(features[shown.name][mine]),
            float(np.median(features[shown.name][others])) if len(others) else None,
        )
        for shown in SHOWN
    ]
    return Profile(rows, len(others))
