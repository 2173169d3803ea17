"""Batch detection speed: events per second through the detection engine over a simulated log, and linkage time.

    .venv/bin/python bench/detect_batch.py /tmp/runs/seed-hydra-small
    .venv/bin/python bench/detect_batch.py /tmp/runs/seed-hydra          # the full-scale target run
    .venv/bin/python bench/detect_batch.py /tmp/runs/seed-hydra --events 3000000   # its first 3 M events

Prints, for the run: reading the event batches alone (the I/O floor, the baseline in the same run), then the engine
fed the same batches (`Engine.run`, as `hydraguard analyze` does) with its time split into folding events in,
account analyses, evidence graphs, linkages and cluster rules (a lagged linkage's time is the wait for the worker
process and what follows it); then one final linkage over every account of the run, in this process. Targets
(issue 4): batch analysis >= 200,000 events/s on 2 cores over the full `seed-hydra` log; linkage over 100,000
accounts <= 60 s. Linkages are as `hydraguard analyze` runs them (daily, clusters 12 h later with Leiden in a worker
process) unless `--linkage-interval` (21600: streaming's every 6 h) or `--linkage-lag` (0: streaming's, at once in
this process) say otherwise.
"""

from __future__ import annotations

import argparse
import resource
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from hydraguard.detect.analyze import simulated_batches
from hydraguard.detect.engine import Engine, batch_settings


def timed(totals: dict[str, float], counts: dict[str, int], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[name] += time.perf_counter() - start
            counts[name] += 1

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a `hydraguard simulate` output directory")
    parser.add_argument(
        "--events",
        type=int,
        default=None,
        help="stop after this many events (the whole registry "
        "is still loaded, so the final linkage spans every account)",
    )
    parser.add_argument(
        "--linkage-interval",
        type=float,
        default=None,
        help="seconds of event time between linkages (default: batch analysis's, detect.batch_linkage_interval)",
    )
    parser.add_argument(
        "--linkage-lag",
        type=float,
        default=None,
        help="seconds of event time from a linkage's graph to its clusters, Leiden meanwhile in a worker process "
        "(default: batch analysis's, detect.batch_linkage_lag; 0: in this process, at once)",
    )
    args = parser.parse_args()
    settings = batch_settings(args.linkage_interval, args.linkage_lag)

    def batches() -> Iterator[pa.RecordBatch]:
        seen = 0
        for batch in simulated_batches(args.run):
            if args.events is not None and seen >= args.events:
                return
            seen += batch.num_rows
            yield batch

    start = time.perf_counter()
    events = sum(batch.num_rows for batch in batches())
    read_seconds = time.perf_counter() - start
    print(
        f"{args.run}: {events:,} events, a linkage every {settings.linkage_interval:g} s of event time, "
        f"its clusters {settings.linkage_lag:g} s later"
    )
    print(f"reading only: {read_seconds:.1f} s, {events / read_seconds:,.0f} events/s")

    engine = Engine(settings=settings)
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    engine._fold = timed(totals, counts, "fold events", engine._fold)  # type: ignore[method-assign]
    engine._account_detections = timed(totals, counts, "account rules", engine._account_detections)  # type: ignore[method-assign]
    engine._graph = timed(totals, counts, "evidence graph", engine._graph)  # type: ignore[method-assign]
    engine.clusters = timed(totals, counts, "linkage in this process", engine.clusters)  # type: ignore[method-assign]
    engine._linked = timed(totals, counts, "lagged linkage applied", engine._linked)  # type: ignore[method-assign]
    engine._cluster_detections = timed(totals, counts, "linkage + cluster rules", engine._cluster_detections)  # type: ignore[method-assign]
    start = time.perf_counter()
    engine.load_registry(pq.read_table(args.run / "registry" / "accounts.parquet"))
    detections = engine.run(batches())
    seconds = time.perf_counter() - start
    print(f"engine: {seconds:.1f} s, {events / seconds:,.0f} events/s, {len(detections):,} detections")
    for name in (
        "fold events",
        "account rules",
        "evidence graph",
        "linkage in this process",
        "lagged linkage applied",
        "linkage + cluster rules",
    ):
        print(f"  {name}: {totals[name]:.1f} s over {counts[name]:,} calls")

    start = time.perf_counter()
    clusters = engine.clusters()
    print(
        f"final linkage over {len(engine.accounts):,} accounts: {time.perf_counter() - start:.1f} s, "
        f"{len(clusters.members):,} clusters"
    )
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")
    engine.close()
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS of the linkage worker process: {worker:,.0f} MiB" if worker else "no linkage worker process")


if __name__ == "__main__":
    main()
