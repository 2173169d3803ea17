"""Batch analysis: run the detection engine over a finished event log and write campaigns and a report.

Input is a directory written by `hydraguard simulate` (`events/day=*/part-*.parquet`, `registry/accounts.parquet`)
or the gateway's event log (Arrow IPC segments) with the registry read from the configured database. The engine
is the streaming one, fed the whole log in time order, so batch and streaming results agree.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hydraguard.detect.engine import Detection, Engine
from hydraguard.events.log import read_table


@dataclass
class Campaign:
    """The detections of one cluster (or one account acting alone) over the whole log."""

    id: str
    level: str
    first_detected: float
    last_detected: float
    accounts: set[str] = field(default_factory=set)
    rules: set[str] = field(default_factory=set)
    enforcing: bool = False
    score: float = 0.0
    evidence: tuple[str, ...] = ()
    features: dict[str, float] = field(default_factory=dict)

    def add(self, detection: Detection) -> None:
        self.last_detected = detection.at
        self.accounts.update(detection.accounts)
        self.rules.update(hit.rule_id for hit in detection.hits)
        self.enforcing |= detection.enforcing
        self.score = max(self.score, detection.score)
        self.evidence = detection.evidence or self.evidence
        self.features = detection.features

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "level": self.level,
            "first_detected": self.first_detected,
            "last_detected": self.last_detected,
            "accounts": sorted(self.accounts),
            "rules": sorted(self.rules),
            "enforcing": self.enforcing,
            "score": self.score,
            "evidence": list(self.evidence),
            "features": self.features,
        }


def simulated_batches(directory: Path, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
    for path in sorted((directory / "events").glob("day=*/part-*.parquet")):
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size)


def log_batches(directory: Path, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
    table = read_table(directory).sort_by("time")
    yield from table.to_batches(max_chunksize=batch_size)


def campaigns_of(detections: list[Detection]) -> list[Campaign]:
    by_subject: dict[str, Campaign] = {}
    for detection in sorted(detections, key=lambda d: d.at):
        campaign = by_subject.setdefault(
            detection.subject, Campaign(detection.subject, detection.level, detection.at, detection.at)
        )
        campaign.add(detection)
    return sorted(by_subject.values(), key=lambda c: (-c.score, -len(c.accounts), c.id))


def analyze(
    batches: Iterator[pa.RecordBatch], registry: pa.Table | None, engine: Engine | None = None
) -> list[Campaign]:
    engine = engine or Engine()
    if registry is not None:
        engine.load_registry(registry)
    return campaigns_of(engine.run(batches))


def report(campaigns: list[Campaign], source: str) -> str:
    lines = [f"# hydraguard analysis of `{source}`", ""]
    clusters = [c for c in campaigns if c.level == "cluster"]
    single = [c for c in campaigns if c.level == "account"]
    enforcing = {a for c in campaigns if c.enforcing for a in c.accounts}
    lines += [
        f"{len(clusters)} clusters and {len(single)} single accounts detected; {len(enforcing)} accounts under an "
        "enforcing rule.",
        "",
        "| Campaign | Accounts | Score | Rules | First detected (UTC) | Top evidence |",
        "|---|---|---|---|---|---|",
    ]
    for c in clusters + single:
        first = _utc(c.first_detected)
        evidence = "; ".join(c.evidence[:3]) or "–"
        lines.append(
            f"| {c.id} | {len(c.accounts)} | {c.score:.2f} | {', '.join(sorted(c.rules))} | {first} | {evidence} |"
        )
    return "\n".join(lines) + "\n"


def _utc(seconds: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M")


def write(campaigns: list[Campaign], out: Path, source: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "campaigns.json").write_text(json.dumps([c.as_json() for c in campaigns], indent=2) + "\n")
    (out / "report.md").write_text(report(campaigns, source))
