"""Account-level behaviour: O(1) state per account, updated with whole event batches at once.

State lives in numpy arrays indexed by an account number, so a batch of events updates every account it touches
with a handful of vectorized operations (`np.add.at`, `np.bitwise_or.at`, `np.maximum.at`). Distinct IPs,
subnets and user agents are counted with a 64-bit linear-counting bitmap per account (exact to a few, then an
estimate, saturating near 250). `features()` turns the state into the named account features that rules read.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

AREAS = ("coding", "math", "agentic", "reasoning", "writing", "chit-chat", "general")
EXTRACTION_AREAS = ("coding", "agentic", "reasoning", "math")  # what public reports say distillers focus on
AREA_SHARE = 0.05  # an area with this share of an account's (or cluster's) requests counts towards its breadth
REASONING_THRESHOLD = 0.5  # a request whose reasoning-extraction score reaches this counts as elicitation
PHASE_BINS = 12  # 5-second bins of the second within the minute: load balancers dispatch in rounds
RECENT_SECONDS = 86_400.0  # windowed features: counts decay with this mean life, so they weigh about the last day
DAY = 86_400.0
EVENT_COLUMNS = [
    "time",
    "account_id",
    "tier",
    "client_ip",
    "user_agent",
    "status",
    "refusal_reason",
    "message_count",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_extraction_score",
    "capability_area",
    "intel_matches",
]
_COUNTERS = (
    "requests",
    "served",
    "refused",
    "banned_refusals",
    "multi_turn",
    "reasoning",
    "prompt_tokens",
    "completion_tokens",
    "first_day_requests",
    "gaps",
    "log_gap_sum",
    "log_gap_sq",
    "hour_buckets",
    "intel_matched",
)
_RECENT = ("requests", "served", "reasoning", "tokens")


def encode(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, list[str | None]]:
    """Each row's index into the column's distinct values, and those values (None for null). Hash-based, in
    arrow: per-row work in C, per-value work in Python."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    encoded = pc.dictionary_encode(values, null_encoding="encode")
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary.to_pylist()


def _crc32(values: list[str]) -> np.ndarray:
    """A stable hash (the same in every process) of each value (`map`: the loop runs in C)."""
    return np.fromiter(map(zlib.crc32, map(str.encode, values)), dtype=np.uint64, count=len(values))


def _bit_numbers(values: list[str | None], hashes: np.ndarray | None = None) -> np.ndarray:
    """One of 64 bit numbers per value, from a stable hash (`_crc32`, or those given); null hashes as ''."""
    hashes = _crc32([v or "" for v in values]) if hashes is None else hashes
    return (hashes & np.uint64(63)).astype(np.int64)


def _any_bits(slot: np.ndarray, bit: np.ndarray, slots: int) -> np.ndarray:
    """Per slot, the 64-bit bitmap with the bits of its rows set."""
    seen = np.zeros((slots, 64), dtype=bool)
    seen[slot, bit] = True
    return np.packbits(seen, axis=1, bitorder="little").view("<u8").ravel().astype(np.uint64)


def _subnets(ips: pa.Array) -> pa.Array:
    """The /24 of an IPv4 address, the /48 of an IPv6 one (as text)."""
    v4 = pc.replace_substring_regex(ips, r"\.\d+$", ".0/24")
    v6 = pc.match_substring(ips, ":")
    if not pc.any(v6).as_py():  # the usual batch: its IPv6 pattern would cost as much again for nothing
        return v4
    return pc.if_else(v6, pc.replace_substring_regex(ips, r"^(([^:]*:){3}).*$", r"\1:/48"), v4)


@dataclass(frozen=True)
class ClientAddresses:
    """A batch's client IPs encoded once for the account table and the evidence log: each row's index into the
    distinct addresses, and those addresses; each address's index into the distinct subnets, and those subnets
    (None for null)."""

    code: np.ndarray
    ips: list[str | None]
    ip_hashes: np.ndarray  # CRC-32 of each distinct address (null: of ''), stable across processes
    subnet_of: np.ndarray
    subnets: list[str | None]

    @classmethod
    def of(cls, column: pa.Array | pa.ChunkedArray) -> ClientAddresses:
        code, ips = encode(column)
        subnet_of, subnets = encode(_subnets(pa.array(ips, pa.string())))
        return cls(code, ips, _crc32([ip or "" for ip in ips]), subnet_of, subnets)

    def row_subnets(self) -> np.ndarray:
        """Each row's index into `subnets`."""
        return self.subnet_of[self.code]


def distinct_estimate(bitmaps: np.ndarray) -> np.ndarray:
    zeros = 64 - np.bitwise_count(bitmaps).astype(np.float64)
    return np.where(zeros > 0, -64 * np.log(np.maximum(zeros, 1) / 64), 64 * math.log(64))


class AccountTable:
    """Per-account behavioural state, grown as new accounts appear."""

    def __init__(self, capacity: int = 1024) -> None:
        self.index: dict[str, int] = {}
        self.ids: list[str] = []
        self._capacity = capacity
        self.counts = {name: np.zeros(capacity) for name in _COUNTERS}
        self.first_seen = np.full(capacity, np.inf)
        self.last_seen = np.full(capacity, -np.inf)
        self.last_hour = np.full(capacity, -1, dtype=np.int64)
        self.hours = np.zeros((capacity, 24))
        self.phase = np.zeros((capacity, PHASE_BINS))
        self.areas = np.zeros((capacity, len(AREAS)))
        self.ip_bits = np.zeros(capacity, dtype=np.uint64)
        self.subnet_bits = np.zeros(capacity, dtype=np.uint64)
        self.ua_bits = np.zeros(capacity, dtype=np.uint64)
        self.recent = {name: np.zeros(capacity) for name in _RECENT}  # decayed to `recent_at`
        self.recent_at = np.full(capacity, -np.inf)
        self.day = np.full(capacity, -1, dtype=np.int64)  # the UTC day of the account's latest request
        self.day_tokens = np.zeros(capacity)  # tokens served to it that day
        self.peak_day_tokens = np.zeros(capacity)  # the most it was served in one UTC day
        self.first_banned_at = np.full(capacity, np.inf)  # its first request refused as `account_banned`
        self.tier = np.full(capacity, -1, dtype=np.int64)  # index into `tier_names` of its latest tier; -1: none
        self.tier_names: list[str] = []

    def __len__(self) -> int:
        return len(self.ids)

    def numbers(self, account_ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Account numbers for a column of ids (new ids get new numbers); -1 for a null id."""
        slot, ids = encode(account_ids)
        return self._numbers_of(ids)[slot]

    def _numbers_of(self, ids: list[str | None]) -> np.ndarray:
        # known ids looked up in one `map` (the loop in C); only the unknown ones, a few per batch, one by one
        numbers = np.fromiter(map(self.index.get, ids, itertools.repeat(-1)), dtype=np.int64, count=len(ids))
        for i in np.flatnonzero(numbers < 0).tolist():
            account = ids[i]
            if account:  # null or empty: no account
                numbers[i] = self.index[account] = len(self.ids)
                self.ids.append(account)
        self._grow(len(self.ids))
        return numbers

    def _grow(self, size: int) -> None:
        if size <= self._capacity:
            return
        new = max(size, 2 * self._capacity)
        extra = new - self._capacity
        for counters in (self.counts, self.recent):
            for name, array in counters.items():
                counters[name] = np.concatenate([array, np.zeros(extra)])
        for name, fill in (
            ("first_seen", np.inf),
            ("last_seen", -np.inf),
            ("recent_at", -np.inf),
            ("day_tokens", 0.0),
            ("peak_day_tokens", 0.0),
            ("first_banned_at", np.inf),
        ):
            setattr(self, name, np.concatenate([getattr(self, name), np.full(extra, fill)]))
        for name in ("last_hour", "day", "tier"):
            setattr(self, name, np.concatenate([getattr(self, name), np.full(extra, -1, dtype=np.int64)]))
        for name in ("hours", "phase", "areas"):
            array = getattr(self, name)
            setattr(self, name, np.concatenate([array, np.zeros((extra, array.shape[1]))]))
        for name in ("ip_bits", "subnet_bits", "ua_bits"):
            setattr(self, name, np.concatenate([getattr(self, name), np.zeros(extra, np.uint64)]))
        self._capacity = new

    def update(self, batch: pa.RecordBatch | pa.Table, addresses: ClientAddresses | None = None) -> np.ndarray:
        """Fold a time-ordered batch of events into the state; returns the batch's account numbers. `addresses`:
        the batch's client IPs, if the caller has encoded them already.

        Each counter is summed per account with one `np.bincount` over the batch's account slots (its distinct
        accounts), then added to the accounts' rows: no per-row scatter into the whole table."""
        slot, ids = encode(batch.column("account_id"))
        numbers = self._numbers_of(ids)
        if (numbers < 0).any():  # rows without an account are not anyone's behaviour
            keep = numbers[slot] >= 0
            batch, slot = batch.filter(pa.array(keep)), slot[keep]
            addresses = None
            used = numbers >= 0
            slot, numbers = (np.cumsum(used) - 1)[slot], numbers[used]
        if len(slot) == 0:
            return np.zeros(0, dtype=np.int64)
        accounts, slots = numbers, len(numbers)

        def total(weights: np.ndarray | None = None) -> np.ndarray:
            return np.bincount(slot, weights, minlength=slots)

        time = batch.column("time").to_numpy()
        status = batch.column("status").to_numpy()
        add = self.counts
        ok = status == 200  # shares are of served requests
        add["requests"][accounts] += total()
        add["served"][accounts] += total(ok)
        add["refused"][accounts] += total(~ok)
        banned = (
            pc.equal(batch.column("refusal_reason"), "account_banned").fill_null(False).to_numpy(zero_copy_only=False)
        )
        add["banned_refusals"][accounts] += total(banned)
        messages = batch.column("message_count").to_numpy()
        add["multi_turn"][accounts] += total(ok & (messages >= 3))  # user, assistant, user: a conversation goes on
        score = batch.column("reasoning_extraction_score").fill_null(0).to_numpy()
        reasoning = ok & (score >= REASONING_THRESHOLD)
        add["reasoning"][accounts] += total(reasoning)
        add["intel_matched"][accounts] += total(
            pc.is_valid(batch.column("intel_matches")).to_numpy(zero_copy_only=False)
        )
        prompt_tokens = batch.column("prompt_tokens").fill_null(0).to_numpy()
        completion_tokens = batch.column("completion_tokens").fill_null(0).to_numpy()
        add["prompt_tokens"][accounts] += total(prompt_tokens)
        add["completion_tokens"][accounts] += total(completion_tokens)
        tokens = np.where(ok, prompt_tokens + completion_tokens, 0)
        if banned.any():  # rare: a per-row pass over the banned rows alone
            rows = np.flatnonzero(banned)
            np.minimum.at(self.first_banned_at, accounts[slot[rows]], time[rows])

        # each account's rows in time order (the batch is time-ordered; a stable sort keeps it so)
        order = np.argsort(slot, kind="stable")
        acc, t = slot[order], time[order]
        starts = np.r_[True, acc[1:] != acc[:-1]]
        ends = np.r_[acc[1:] != acc[:-1], True]
        self.first_seen[accounts[acc[starts]]] = np.minimum(self.first_seen[accounts[acc[starts]]], t[starts])
        first_day = time < self.first_seen[accounts[slot]] + 86_400
        add["first_day_requests"][accounts] += total(first_day)

        # inter-arrival gaps, within the batch and from each account's previous request
        previous = np.empty_like(t)
        previous[1:] = t[:-1]
        previous[starts] = self.last_seen[accounts[acc[starts]]]
        gap = t - previous
        valid = np.isfinite(gap)
        log_gap = np.log1p(np.maximum(gap[valid], 0))
        add["gaps"][accounts] += np.bincount(acc[valid], minlength=slots)
        add["log_gap_sum"][accounts] += np.bincount(acc[valid], log_gap, minlength=slots)
        add["log_gap_sq"][accounts] += np.bincount(acc[valid], log_gap**2, minlength=slots)
        self.last_seen[accounts[acc[ends]]] = np.maximum(self.last_seen[accounts[acc[ends]]], t[ends])

        # distinct hours active: count each account's new hour buckets in time order
        hour = (t // 3600).astype(np.int64)
        previous_hour = np.empty_like(hour)
        previous_hour[1:] = hour[:-1]
        previous_hour[starts] = self.last_hour[accounts[acc[starts]]]
        add["hour_buckets"][accounts] += np.bincount(acc, hour != previous_hour, minlength=slots)
        self.last_hour[accounts[acc[ends]]] = hour[ends]

        self.hours[accounts] += self._binned(slot, ((time % 86_400) // 3600).astype(np.int64), 24, slots)
        phase = ((time % 60) // (60 / PHASE_BINS)).astype(np.int64)
        self.phase[accounts] += self._binned(slot, phase, PHASE_BINS, slots)
        area = pc.index_in(batch.column("capability_area"), value_set=pa.array(AREAS)).fill_null(len(AREAS) - 1)
        self.areas[accounts] += self._binned(slot, area.to_numpy(zero_copy_only=False), len(AREAS), slots)
        addresses = addresses or ClientAddresses.of(batch.column("client_ip"))
        ip_bits = _bit_numbers(addresses.ips, addresses.ip_hashes)
        self.ip_bits[accounts] |= _any_bits(slot, ip_bits[addresses.code], slots)
        self.subnet_bits[accounts] |= _any_bits(slot, _bit_numbers(addresses.subnets)[addresses.row_subnets()], slots)
        agent_code, agents = encode(batch.column("user_agent"))
        self.ua_bits[accounts] |= _any_bits(slot, _bit_numbers(agents)[agent_code], slots)
        latest_row, latest_of = order[ends], accounts[acc[ends]]  # each account's latest row in the batch
        recent = {"requests": 1.0, "served": ok, "reasoning": reasoning, "tokens": tokens}
        self._update_recent(accounts, slot, total, time, time[latest_row], recent)
        self._update_days(accounts, slot, time, tokens, latest_row, latest_of)
        tier_code, tiers = encode(batch.column("tier"))
        tier = np.array([self._tier_number(name) for name in tiers], dtype=np.int64)[tier_code[latest_row]]
        self.tier[latest_of] = np.where(tier >= 0, tier, self.tier[latest_of])
        return accounts[slot]

    def _tier_number(self, tier: str | None) -> int:
        if tier is None:
            return -1
        if tier not in self.tier_names:
            self.tier_names.append(tier)
        return self.tier_names.index(tier)

    def _update_recent(
        self,
        accounts: np.ndarray,
        slot: np.ndarray,
        total: Callable[[np.ndarray], np.ndarray],
        time: np.ndarray,
        latest: np.ndarray,
        values: dict[str, np.ndarray | float],
    ) -> None:
        """Decay each account's windowed counters to its latest event (`latest`, per slot), then add the batch's
        rows, each weighted by how long before that event it came: the same state however batches are cut."""
        weight = np.exp((time - latest[slot]) / RECENT_SECONDS)
        decay = np.exp(np.minimum(self.recent_at[accounts] - latest, 0.0) / RECENT_SECONDS)
        for name, value in values.items():
            self.recent[name][accounts] = self.recent[name][accounts] * decay + total(weight * value)
        self.recent_at[accounts] = np.maximum(self.recent_at[accounts], latest)

    def _update_days(
        self,
        accounts: np.ndarray,
        slot: np.ndarray,
        time: np.ndarray,
        tokens: np.ndarray,
        latest_row: np.ndarray,
        latest_of: np.ndarray,
    ) -> None:
        """Tokens served per account and UTC day, carried across batches: the busiest day so far, and the latest.
        `latest_row` is each account's latest row, in the order of `slot`'s values (`latest_of`: their accounts)."""
        day = (time // DAY).astype(np.int64)
        first, span, slots = int(day.min()), int(day.max() - day.min()) + 1, len(accounts)
        sums = np.bincount(slot * span + (day - first), tokens, minlength=slots * span).reshape(slots, span)
        carried = self.day[accounts] - first
        same = (carried >= 0) & (carried < span)
        sums[np.flatnonzero(same), carried[same]] += self.day_tokens[accounts[same]]
        self.peak_day_tokens[accounts] = np.maximum(self.peak_day_tokens[accounts], sums.max(axis=1))
        latest = day[latest_row]
        self.day_tokens[latest_of] = sums[slot[latest_row], latest - first]
        self.day[latest_of] = latest

    @staticmethod
    def _binned(slot: np.ndarray, bins: np.ndarray, width: int, slots: int) -> np.ndarray:
        """(slots, width) counts of rows per slot and bin."""
        return np.bincount(slot * width + bins, minlength=slots * width).reshape(slots, width)

    def features(self, numbers: np.ndarray | None = None, now: float | None = None) -> dict[str, np.ndarray]:
        """Named account features (`account.<name>` in rules) for the given account numbers (default: all), the
        windowed ones decayed to the event time `now` (default: each account's latest batch)."""
        n = len(self.ids)
        idx = np.arange(n) if numbers is None else numbers
        c = {name: array[idx] for name, array in self.counts.items()}
        requests = np.maximum(c["requests"], 1)
        served = np.maximum(c["served"], 1)
        span_hours = np.maximum((self.last_seen[idx] - self.first_seen[idx]) / 3600, 1)
        hours = self.hours[idx]
        hour_share = hours / np.maximum(hours.sum(axis=1, keepdims=True), 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy = -np.nansum(np.where(hour_share > 0, hour_share * np.log(hour_share), 0), axis=1) / np.log(24)
        gaps = np.maximum(c["gaps"], 1)
        mean_log_gap = c["log_gap_sum"] / gaps
        log_gap_std = np.sqrt(np.maximum(c["log_gap_sq"] / gaps - mean_log_gap**2, 0))
        areas = self.areas[idx]
        area_share = areas / np.maximum(areas.sum(axis=1, keepdims=True), 1)
        extraction = [AREAS.index(a) for a in EXTRACTION_AREAS]
        days = np.maximum(span_hours / 24, 1)
        phase = self.phase[idx]
        at = self.recent_at[idx]
        decay = np.ones(len(idx)) if now is None else np.exp(np.minimum(at - now, 0.0) / RECENT_SECONDS)
        recent = {name: array[idx] * decay for name, array in self.recent.items()}
        per_day = DAY / RECENT_SECONDS
        return {
            "requests": c["requests"],
            "served": c["served"],
            "requests_per_day": c["requests"] / days,
            "tokens_per_day": (c["prompt_tokens"] + c["completion_tokens"]) / days,
            "active_days": span_hours / 24,
            "active_hour_share": np.minimum(c["hour_buckets"] / span_hours, 1),
            "hour_entropy": entropy,
            "log_gap_std": log_gap_std,
            "phase_concentration": phase.max(axis=1) / np.maximum(phase.sum(axis=1), 1),
            "first_day_share": c["first_day_requests"] / requests,
            "reasoning_requests": c["reasoning"],
            "reasoning_share": c["reasoning"] / served,
            "multi_turn_share": c["multi_turn"] / served,
            "extraction_area_share": area_share[:, extraction].sum(axis=1),
            "topic_breadth": (area_share >= AREA_SHARE).sum(axis=1).astype(np.float64),
            "output_input_ratio": c["completion_tokens"] / np.maximum(c["prompt_tokens"], 1),
            "distinct_ips": distinct_estimate(self.ip_bits[idx]),
            "distinct_subnets": distinct_estimate(self.subnet_bits[idx]),
            "distinct_user_agents": distinct_estimate(self.ua_bits[idx]),
            "refusal_rate": c["refused"] / requests,
            "intel_share": c["intel_matched"] / requests,
            "banned_refusals": c["banned_refusals"],
            "recent_requests_per_day": recent["requests"] * per_day,
            "recent_tokens_per_day": recent["tokens"] * per_day,
            "recent_reasoning_share": np.divide(
                recent["reasoning"], recent["served"], out=np.zeros(len(idx)), where=recent["served"] > 0
            ),
            "peak_day_tokens": self.peak_day_tokens[idx],
        }
