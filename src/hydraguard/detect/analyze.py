"""Batch analysis: run the detection engine over a finished event log and write campaigns and a report.

Input is a directory written by `hydraguard simulate` (`events/day=*/part-*.parquet`, `registry/accounts.parquet`)
or the gateway's event log (Arrow IPC segments) with the registry read from the configured database. The engine
is the streaming one, fed the whole log in time order, so batch and streaming results agree when given the same
intervals (`hydraguard analyze` links daily by default, `detect.batch_linkage_interval`: docs/detection.md, "Speed").
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from hydraguard.detect.campaigns import Campaign, CampaignStore
from hydraguard.detect.engine import COLUMNS, Engine
from hydraguard.events.log import read_table


def simulated_batches(directory: Path, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
    """The events of a simulated run in time order, with only the columns the engine reads (Parquet reads no
    others: the prompt references and text, latencies and sampling fields are most of a file)."""
    for path in sorted((directory / "events").glob("day=*/part-*.parquet")):
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=COLUMNS)


def log_batches(directory: Path, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
    """The events of a gateway event log in time order (`read_table` sorts them), the engine's columns only."""
    yield from read_table(directory).select(COLUMNS).to_batches(max_chunksize=batch_size)


def analyze(
    batches: Iterator[pa.RecordBatch],
    registry: pa.Table | None,
    engine: Engine | None = None,
    store: CampaignStore | None = None,
) -> list[Campaign]:
    """Campaigns found in the whole log; kept in `store` if one is given, else in a throwaway in-memory one."""
    engine = engine or Engine()
    store = store or CampaignStore(sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool))
    if registry is not None:
        engine.load_registry(registry)
    store.record(engine.run(batches))
    return store.list()


SHADOW_ROWS = 20  # single subjects seen only by shadow rules, listed in the report (campaigns.json has them all)
HEADER = [
    "| Campaign | Accounts | Score | Rules | First detected (UTC) | Top evidence | Sample templates (requests) |",
    "|---|---|---|---|---|---|---|",
]


def report(campaigns: list[Campaign], source: str) -> str:
    """Clusters and the single subjects under an enforcing rule in full; single subjects only shadow rules saw
    (a shadow request rule can see tens of thousands of keys) counted per rule, the highest-scoring listed."""
    clusters = [c for c in campaigns if c.level == "cluster"]
    single = [c for c in campaigns if c.level != "cluster"]  # an account's, or a key's or address's requests
    shadow = sorted((c for c in single if not c.enforcing), key=lambda c: (-c.score, -len(c.accounts), c.id))
    enforcing = {a for c in campaigns if c.enforcing for a in c.accounts}
    lines = [
        f"# hydraguard analysis of `{source}`",
        "",
        f"{len(clusters)} clusters and {len(single)} single accounts, keys or addresses detected; {len(enforcing)} "
        "accounts under an enforcing rule.",
        "",
        *HEADER,
        *(_row(c) for c in clusters + [c for c in single if c.enforcing]),
    ]
    if shadow:
        by_rule = Counter(rule for c in shadow for rule in c.rules)
        lines += [
            "",
            f"## Seen by shadow rules only: {len(shadow)} single accounts, keys or addresses",
            "",
            *(f"- {rule}: {count}" for rule, count in sorted(by_rule.items(), key=lambda item: (-item[1], item[0]))),
            "",
            f"The {min(SHADOW_ROWS, len(shadow))} highest-scoring (campaigns.json lists every one):",
            "",
            *HEADER,
            *(_row(c) for c in shadow[:SHADOW_ROWS]),
        ]
    return "\n".join(lines) + "\n"


def _row(c: Campaign) -> str:
    evidence = "; ".join(c.evidence[:3]) or "–"
    templates = ", ".join(f"`{t['template_hash']}` ({t['requests']:,})" for t in c.templates[:3]) or "–"
    rules, first = ", ".join(sorted(c.rules)), _utc(c.first_detected)
    return f"| {c.id} | {len(c.accounts)} | {c.score:.2f} | {rules} | {first} | {evidence} | {templates} |"


def _utc(seconds: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M")


def write(campaigns: list[Campaign], out: Path, source: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "campaigns.json").write_text(json.dumps([c.as_json() for c in campaigns], indent=2) + "\n")
    (out / "report.md").write_text(report(campaigns, source))
