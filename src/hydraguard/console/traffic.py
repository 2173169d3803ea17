"""What the console shows of the gateway's event log: traffic and outcomes over time, per campaign or account.

The log is read whole on each page (the columns a page needs): right for a demo or a day of a small deployment;
a large deployment's console would read a rollup instead (not built yet, docs/console.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hydraguard.events.log import read_segment, segments
from hydraguard.events.schema import ARROW_SCHEMA

COLUMNS = (
    "time",
    "account_id",
    "status",
    "decision_type",
    "completion_tokens",
    "capability_area",
    "template_hash",
    "prompt_text",
    "intel_matches",
    "client_ip",
)
OUTCOMES = ("served", "throttled", "challenged", "blocked", "other refusal")


def read(
    events_dir: str | Path | None, accounts: Collection[str] | None = None, columns: Collection[str] = COLUMNS
) -> pa.Table:
    """These columns (by default the console's) of every event (of these accounts), by time."""
    schema = pa.schema([ARROW_SCHEMA.field(c) for c in columns])
    if events_dir is None or not Path(events_dir).is_dir():
        return schema.empty_table()
    tables = [read_segment(p).select(schema.names) for p in segments(events_dir)]
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    if accounts is not None:
        table = of_accounts(table, accounts)
    return table.sort_by("time")


def of_accounts(table: pa.Table, accounts: Collection[str]) -> pa.Table:
    return table.filter(pc.is_in(table["account_id"], pa.array(sorted(accounts), pa.string())))


def outcome_of(status: np.ndarray, decision: list[str | None]) -> np.ndarray:
    """Each request's outcome, as an index into OUTCOMES."""
    out = np.full(len(status), 4, dtype=np.int8)
    out[status == 200] = 0
    kinds = np.array([d or "" for d in decision], dtype=object)
    out[(status == 429) & (kinds == "throttle")] = 1
    out[(status == 403) & (kinds == "challenge")] = 2
    out[(status == 403) & (kinds == "block")] = 3
    return out


@dataclass(frozen=True)
class Series:
    """Requests per time bucket, one row per outcome."""

    start: float
    bucket: float  # seconds
    counts: np.ndarray  # (len(OUTCOMES), buckets)

    @property
    def total(self) -> int:
        return int(self.counts.sum())


def series(table: pa.Table, buckets: int = 60) -> Series:
    if table.num_rows == 0:
        return Series(0.0, 1.0, np.zeros((len(OUTCOMES), buckets), dtype=np.int64))
    times = table["time"].to_numpy()
    start, end = float(times[0]), float(times[-1])
    width = max((end - start) / buckets, 1e-3)
    index = np.minimum(((times - start) / width).astype(np.int64), buckets - 1)
    outcome = outcome_of(table["status"].to_numpy(), table["decision_type"].to_pylist())
    counts = np.zeros((len(OUTCOMES), buckets), dtype=np.int64)
    np.add.at(counts, (outcome, index), 1)
    return Series(start, width, counts)


@dataclass(frozen=True)
class Containment:
    """What a campaign got before decisions started acting on it."""

    contained_at: float | None  # the first of its requests a decision acted on (None: not yet)
    first_request: float | None
    requests_before: int
    tokens_before: int
    refused_after: int


def containment(table: pa.Table) -> Containment:
    if table.num_rows == 0:
        return Containment(None, None, 0, 0, 0)
    times = table["time"].to_numpy()
    acted = np.array([d is not None for d in table["decision_type"].to_pylist()])
    served = table["status"].to_numpy() == 200
    tokens = table["completion_tokens"].fill_null(0).to_numpy()
    cut = int(np.argmax(acted)) if acted.any() else len(times)
    refused = int((~served[cut:]).sum())
    return Containment(
        float(times[cut]) if acted.any() else None,
        float(times[0]),
        int(served[:cut].sum()),
        int(tokens[:cut][served[:cut]].sum()),
        refused,
    )


def top(values: list[str | None], n: int = 8) -> list[tuple[str, int]]:
    return Counter(v for v in values if v).most_common(n)


def samples(table: pa.Table, n: int = 5) -> list[tuple[str, int, str | None]]:
    """The most repeated templates: (template hash, requests, one prompt's text when the log keeps text)."""
    hashes = table["template_hash"].to_pylist()
    texts = table["prompt_text"].to_pylist()
    example: dict[str, str] = {}
    for template, text in zip(hashes, texts, strict=True):
        if template and text and template not in example:
            example[template] = text
    return [(template, count, example.get(template)) for template, count in top(hashes, n)]
