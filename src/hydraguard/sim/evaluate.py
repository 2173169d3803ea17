"""Scoring detectors on simulated traffic (docs/simulator.md, "Evaluation").

`run_detector` feeds a simulation's registry and events (in time order) to a detector and collects its
earliest flag per account; `score` compares the flags with the ground truth (`truth.parquet`, and
`prompts.parquet` for which campaign requests are distillation) and with the events, and `evaluate` does both
for every detector and run, returning rows for `markdown` and JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hydraguard.sim.detector import Detector, Flag

SCORE_COLUMNS = ["time", "account_id", "status", "prompt_tokens", "completion_tokens", "prompt_ref"]


def event_files(run: Path) -> list[Path]:
    return sorted((run / "events").glob("day=*/part-0.parquet"))


def read_registry(run: Path) -> dict[str, pa.Table]:
    return {p.stem: pq.read_table(p) for p in sorted((run / "registry").glob("*.parquet"))}


def batches(run: Path, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
    """The run's events in time order (day partitions in order, each sorted by time)."""
    for path in event_files(run):
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size)


def run_detector(detector: Detector, registry: dict[str, pa.Table], events: Iterable[pa.RecordBatch]) -> list[Flag]:
    """Every account's earliest flag. A flag dated after the last event the detector has seen is an error
    (it would be looking ahead)."""
    detector.start(registry)
    first: dict[str, Flag] = {}
    seen = -math.inf
    for batch in events:
        if batch.num_rows:
            seen = max(seen, pc.max(batch.column("time")).as_py())
        for flag in detector.observe(batch):
            if flag.flagged_at > seen:
                raise ValueError(f"{detector.name}: flag for {flag.account_id} at {flag.flagged_at} is after {seen}")
            if flag.account_id not in first or flag.flagged_at < first[flag.account_id].flagged_at:
                first[flag.account_id] = flag
    return sorted(first.values(), key=lambda f: (f.flagged_at, f.account_id))


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def score(flags: Iterable[Flag], truth: pa.Table, events: pa.Table, prompts: pa.Table | None = None) -> dict[str, Any]:
    """The metrics of one detector on one run (definitions in docs/simulator.md, "Evaluation").

    `truth` needs `account_id` and `campaign_id` (null: legitimate); `events` the `SCORE_COLUMNS`
    (`prompt_ref` only with `prompts`, which needs `prompt_ref` and `ordinary`).
    """
    accounts = truth.column("account_id").to_pylist()
    index = {a: i for i, a in enumerate(accounts)}
    campaign_of = truth.column("campaign_id").to_pylist()
    positive = np.array([c is not None for c in campaign_of], dtype=bool)
    flag_at = np.full(len(accounts), np.inf)
    for f in flags:
        i = index.get(f.account_id)
        if i is not None:
            flag_at[i] = min(flag_at[i], f.flagged_at)
    flagged = np.isfinite(flag_at)

    acc = pc.index_in(events.column("account_id"), value_set=truth.column("account_id"))
    acc = acc.fill_null(-1).to_numpy(zero_copy_only=False)
    known = acc >= 0
    acc = np.where(known, acc, 0)
    # account-level metrics count the accounts that sent at least one request in the span
    active = np.bincount(acc[known], minlength=len(accounts)) > 0
    tp, fp = int((active & flagged & positive).sum()), int((active & flagged & ~positive).sum())
    fn, tn = int((active & ~flagged & positive).sum()), int((active & ~flagged & ~positive).sum())
    time = events.column("time").to_numpy(zero_copy_only=False)
    served = (events.column("status").to_numpy(zero_copy_only=False) == 200) & known
    tokens = (
        events.column("prompt_tokens").fill_null(0).to_numpy(zero_copy_only=False)
        + events.column("completion_tokens").fill_null(0).to_numpy(zero_copy_only=False)
    ).astype(np.int64)
    before = time < flag_at[acc]  # served before containment: the account was not flagged yet
    is_campaign = positive[acc] & known
    distill = np.ones(len(time), dtype=bool)
    if prompts is not None:
        ordinary_refs = prompts.filter(pc.field("ordinary")).column("prompt_ref")
        distill = ~pc.is_in(events.column("prompt_ref"), value_set=ordinary_refs).to_numpy(zero_copy_only=False)

    def served_shares(mask: np.ndarray) -> dict[str, Any]:
        base = served & mask
        return {
            "requests": int(base.sum()),
            "tokens": int(tokens[base].sum()),
            "requests_served_share": _ratio(int((base & before).sum()), int(base.sum())),
            "tokens_served_share": _ratio(int(tokens[base & before].sum()), int(tokens[base].sum())),
        }

    campaigns: dict[str, Any] = {}
    for cid in sorted({c for c in campaign_of if c is not None}):
        members = np.array([c == cid for c in campaign_of], dtype=bool)
        in_campaign = members[acc] & known
        start = float(time[in_campaign].min()) if in_campaign.any() else None
        first_flag = float(flag_at[members].min())
        detected = bool(np.isfinite(first_flag))
        campaigns[cid] = {
            "accounts": int((members & active).sum()),
            "accounts_flagged_share": _ratio(int((members & active & flagged).sum()), int((members & active).sum())),
            "detected": detected,
            "start": start,
            "time_to_detection_h": (first_flag - start) / 3600 if detected and start is not None else None,
            **served_shares(in_campaign),
            "distillation": served_shares(in_campaign & distill),
        }
    legit = served & ~is_campaign
    refused = legit & ~before
    ttd = [c["time_to_detection_h"] for c in campaigns.values() if c["time_to_detection_h"] is not None]
    return {
        "accounts": {"campaign": tp + fn, "legit": fp + tn, "inactive": int((~active).sum())},
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "fpr": _ratio(fp, fp + tn),
        "campaigns_detected": sum(c["detected"] for c in campaigns.values()),
        "campaigns": campaigns,
        "time_to_detection_h_median": float(np.median(ttd)) if ttd else None,
        "campaign": served_shares(is_campaign),
        "distillation": served_shares(is_campaign & distill),
        "legit_requests_refused": int(refused.sum()),
        "legit_requests_refused_share": _ratio(int(refused.sum()), int(legit.sum())),
        "legit_tokens_refused": int(tokens[refused].sum()),
    }


def evaluate_run(detector: Detector, run: Path) -> dict[str, Any]:
    flags = run_detector(detector, read_registry(run), batches(run))
    events = pa.concat_tables(pq.read_table(p, columns=SCORE_COLUMNS) for p in event_files(run))
    prompts_path = run / "prompts.parquet"
    prompts = pq.read_table(prompts_path, columns=["prompt_ref", "ordinary"]) if prompts_path.exists() else None
    manifest = json.loads((run / "manifest.json").read_text())
    result = score(flags, pq.read_table(run / "truth.parquet"), events, prompts)
    return {
        "detector": detector.name,
        "scenario": manifest.get("scenario", run.name),
        "run": str(run),
        "corpora": {k: ("builtin" if v.get("builtin") else v.get("path")) for k, v in manifest["corpora"].items()},
        "flags": len(flags),
        **result,
    }


def _fmt(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.2f} %" if percent else f"{value:.3f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| Detector | Scenario | Precision | Recall | FPR | Campaigns detected | Median time to detection (h) "
        "| Campaign requests served | Campaign tokens served | Distillation requests served "
        "| Legit requests refused |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        ttd = r["time_to_detection_h_median"]
        lines.append(
            f"| {r['detector']} | {r['scenario']} | {_fmt(r['precision'])} | {_fmt(r['recall'])} "
            f"| {_fmt(r['fpr'])} | {r['campaigns_detected']}/{len(r['campaigns'])} "
            f"| {'–' if ttd is None else f'{ttd:.1f}'} "
            f"| {_fmt(r['campaign']['requests_served_share'], True)} "
            f"| {_fmt(r['campaign']['tokens_served_share'], True)} "
            f"| {_fmt(r['distillation']['requests_served_share'], True)} "
            f"| {r['legit_requests_refused']:,} ({_fmt(r['legit_requests_refused_share'], True)}) |"
        )
    return head + "\n".join(lines) + "\n"
