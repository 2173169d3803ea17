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

from hydraguard.events.schema import ARROW_SCHEMA
from hydraguard.sim.detector import Detector, Flag

SCORE_COLUMNS = ["time", "account_id", "status", "prompt_tokens", "completion_tokens", "prompt_ref"]
SERIES_BIN_HOURS = 6  # resolution of the tokens-served-over-time series


def event_files(run: Path) -> list[Path]:
    return sorted((run / "events").glob("day=*/part-0.parquet"))


def read_registry(run: Path) -> dict[str, pa.Table]:
    return {p.stem: pq.read_table(p) for p in sorted((run / "registry").glob("*.parquet"))}


def batches(run: Path, batch_size: int = 65_536, with_text: bool = True) -> Iterator[pa.RecordBatch]:
    """The run's events in time order (day partitions in order, each sorted by time). Without `with_text` the
    `prompt_text` column is not read (on a run with text it is most of the bytes) and comes as nulls, as from a
    run or gateway that keeps no text."""
    names = [name for name in ARROW_SCHEMA.names if with_text or name != "prompt_text"]
    for path in event_files(run):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=names):
            if not with_text:
                columns = [
                    batch.column(n) if n != "prompt_text" else pa.nulls(batch.num_rows, pa.string())
                    for n in ARROW_SCHEMA.names
                ]
                batch = pa.RecordBatch.from_arrays(columns, schema=ARROW_SCHEMA)
            yield batch


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


def score(
    flags: Iterable[Flag],
    truth: pa.Table,
    events: pa.Table,
    prompts: pa.Table | None = None,
    account_scores: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The metrics of one detector on one run (definitions in docs/simulator.md, "Evaluation").

    `truth` needs `account_id` and `campaign_id` (null: legitimate), and where it has `population` (and
    `hard_negative`) the counts are also given per population; `events` the `SCORE_COLUMNS` (`prompt_ref` only
    with `prompts`, which needs `prompt_ref` and `ordinary`). `account_scores` (from a detector that scores every
    account it examines) gives the ROC curve.
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
    roc = None
    if account_scores is not None:
        suspicion = np.array([account_scores.get(a, -np.inf) for a in accounts])
        roc = roc_curve(suspicion[active], positive[active])
    ttd = [c["time_to_detection_h"] for c in campaigns.values() if c["time_to_detection_h"] is not None]
    populations: dict[str, dict[str, int]] = {}
    if "population" in truth.column_names:
        for name, active_in, flagged_in in zip(truth.column("population").to_pylist(), active, flagged, strict=True):
            counts = populations.setdefault(name, {"accounts": 0, "flagged": 0})
            counts["accounts"] += int(active_in)
            counts["flagged"] += int(active_in and flagged_in)
    hard = (
        truth.column("hard_negative").fill_null(False).to_numpy(zero_copy_only=False)
        if "hard_negative" in truth.column_names
        else np.zeros(len(accounts), dtype=bool)
    )
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
        "campaign_tokens_over_time": tokens_over_time(time, tokens, is_campaign & served, before),
        "roc": roc,
        "populations": dict(sorted(populations.items())),
        "hard_negatives_flagged": int((active & flagged & hard & ~positive).sum()),
    }


def tokens_over_time(time: np.ndarray, tokens: np.ndarray, mask: np.ndarray, before: np.ndarray) -> dict[str, Any]:
    """Cumulative tokens of the `mask` requests served by the end of each SERIES_BIN_HOURS bin from the first
    event: with the defence (served before containment) and without (all of them)."""
    if not len(time):
        return {"start": None, "bin_hours": SERIES_BIN_HOURS, "with_defence": [], "without_defence": []}
    start = float(time.min())
    bins = ((time - start) // (SERIES_BIN_HOURS * 3600)).astype(np.int64)
    size = int(bins.max()) + 1

    def cumulative(m: np.ndarray) -> list[int]:
        return np.cumsum(np.bincount(bins[m], weights=tokens[m], minlength=size)).astype(np.int64).tolist()

    return {
        "start": start,
        "bin_hours": SERIES_BIN_HOURS,
        "with_defence": cumulative(mask & before),
        "without_defence": cumulative(mask),
    }


def roc_curve(suspicion: np.ndarray, positive: np.ndarray) -> dict[str, Any] | None:
    """ROC of per-account suspicion scores (unscored accounts: -inf, flagged by no threshold; the curve's last
    step to (1, 1) stands for them). None when a class is empty."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return None
    finite = np.isfinite(suspicion)
    order = np.argsort(-suspicion[finite], kind="stable")
    scores, labels = suspicion[finite][order], positive[finite][order]
    last = np.r_[np.flatnonzero(np.diff(scores) != 0), len(scores) - 1] if len(scores) else np.array([], int)
    tpr = np.r_[0.0, np.cumsum(labels)[last] / n_pos, 1.0]
    fpr = np.r_[0.0, np.cumsum(~labels)[last] / n_neg, 1.0]
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": float(np.trapezoid(tpr, fpr))}


def flags_table(flags: Iterable[Flag], truth: pa.Table) -> pa.Table:
    """The flags beside the ground truth of their accounts (`truth.parquet`'s columns; null for an account
    it does not know): what an analyst reads to see which population a false positive came from and why."""
    flags = list(flags)
    table = pa.table(
        {
            "account_id": pa.array([f.account_id for f in flags], pa.string()),
            "flagged_at": pa.array([f.flagged_at for f in flags], pa.float64()),
            "score": pa.array([f.score for f in flags], pa.float64()),
            "reason": pa.array([f.reason for f in flags], pa.string()),
        }
    )
    return table.join(truth, "account_id", join_type="left outer").sort_by([("flagged_at", "ascending")])


def flags_file(detector: str, run: Path) -> str:
    """The name `hydraguard evaluate` gives a detector's flags on a run."""
    return f"flags-{_slug(detector)}-{_slug(run.name)}.parquet"


def evaluate_run(detector: Detector, run: Path, flags_out: Path | None = None) -> dict[str, Any]:
    """One detector on one run; with `flags_out`, its flags beside the ground truth (`flags_table`) are written
    there as Parquet. A detector that reads prompt text (`needs_prompt_text`) gets the events' `prompt_text`, as
    from a gateway that keeps it (`events.keep_prompt_text`); a run simulated without `--materialize-text` has
    none and is refused."""
    manifest = json.loads((run / "manifest.json").read_text())
    needs_text = getattr(detector, "needs_prompt_text", False)
    if needs_text and not manifest.get("materialize_text"):
        raise ValueError(
            f"{detector.name} reads prompt text, and {run} was simulated without it: "
            "run `hydraguard simulate ... --materialize-text`"
        )
    flags = run_detector(detector, read_registry(run), batches(run, with_text=needs_text))
    events = pa.concat_tables(pq.read_table(p, columns=SCORE_COLUMNS) for p in event_files(run))
    prompts_path = run / "prompts.parquet"
    prompts = pq.read_table(prompts_path, columns=["prompt_ref", "ordinary"]) if prompts_path.exists() else None
    scores = detector.account_scores() if hasattr(detector, "account_scores") else None
    truth = pq.read_table(run / "truth.parquet")
    result = score(flags, truth, events, prompts, scores)
    if flags_out is not None:
        pq.write_table(flags_table(flags, truth), flags_out)
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
        "| Legit requests refused | Hard negatives flagged |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n"
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
            f"| {r['legit_requests_refused']:,} ({_fmt(r['legit_requests_refused_share'], True)}) "
            f"| {r['hard_negatives_flagged']:,} |"
        )
    return head + "\n".join(lines) + "\n"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)


def plots(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """PNG plots next to the table, per run: campaign tokens served over time without defence and with each
    detector (`tokens-<scenario>.png`, for runs with a campaign), and the ROC curves of detectors that score
    accounts with every detector's operating point (`roc-<scenario>.png`). Returns the files written."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    by_run: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_run.setdefault(row["run"], []).append(row)
    names: dict[str, int] = {}
    written = []
    for run_rows in by_run.values():
        scenario = str(run_rows[0]["scenario"])
        names[scenario] = names.get(scenario, 0) + 1
        stem = _slug(scenario if names[scenario] == 1 else f"{scenario}-{names[scenario]}")
        series = run_rows[0]["campaign_tokens_over_time"]
        if series["without_defence"] and series["without_defence"][-1] > 0:
            figure = Figure(figsize=(8, 4.5))
            FigureCanvasAgg(figure)
            axes = figure.add_subplot()
            days = np.arange(1, len(series["without_defence"]) + 1) * series["bin_hours"] / 24
            axes.plot(days, np.array(series["without_defence"]) / 1e6, "k--", label="no defence")
            for row in run_rows:
                served = row["campaign_tokens_over_time"]["with_defence"]
                axes.plot(days, np.array(served) / 1e6, label=row["detector"])
            axes.set(xlabel="days from the first request", ylabel="campaign tokens served (millions)")
            axes.set_title(f"{scenario}: tokens leaked to campaigns")
            axes.legend()
            figure.savefig(path := out / f"tokens-{stem}.png", dpi=100)
            written.append(path)
        if any(row["fpr"] is not None and row["recall"] is not None for row in run_rows):
            figure = Figure(figsize=(5.5, 5.5))
            FigureCanvasAgg(figure)
            axes = figure.add_subplot()
            axes.plot([0, 1], [0, 1], color="0.8", linewidth=1)
            for row in run_rows:
                if row["roc"] is not None:
                    line = axes.plot(
                        row["roc"]["fpr"], row["roc"]["tpr"], label=f"{row['detector']} (AUC {row['roc']['auc']:.3f})"
                    )
                    color = line[0].get_color()
                else:
                    color = None
                if row["fpr"] is not None and row["recall"] is not None:
                    label = None if row["roc"] is not None else f"{row['detector']} (operating point)"
                    axes.plot([row["fpr"]], [row["recall"]], "o", color=color, label=label)
            axes.set(xlabel="false-positive rate (accounts)", ylabel="recall (accounts)", xlim=(0, 1), ylim=(0, 1.02))
            axes.set_title(f"{scenario}: ROC")
            axes.legend(loc="lower right")
            figure.savefig(path := out / f"roc-{stem}.png", dpi=100)
            written.append(path)
    return written
