"""Request-level feature cost: `detect.request.request_features` per prompt, median and p99, on the shared prompt
corpora, next to the gateway's own `describe_chat` on the same request bodies (the baseline each request already
pays). Target (issue 4): <= 50 microseconds median per request.

    .venv/bin/python bench/request_features.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import msgspec

from hydraguard.detect.request import request_features
from hydraguard.gateway.requests import describe_chat

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "prompts"


def load(name: str) -> list[tuple[str, str]]:
    records = [json.loads(line) for line in (DATA / name).read_text().split("\n") if line.strip()]
    return [(r["system"] or "", r["turns"][-1]) for r in records]


def messages(system: str, user: str) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]


def timed(fn, items) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for item in items:
        start = time.perf_counter_ns()
        fn(item)
        out.append((time.perf_counter_ns() - start) / 1e3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print("| Corpus | Prompts | describe_chat median / p99 (µs) | request_features median / p99 (µs) |")
    print("|---|---|---|---|")
    for name in ("legit.jsonl", "extraction.jsonl"):
        prompts = load(name)
        bodies = [msgspec.json.encode({"model": "m", "messages": messages(s, u)}) for s, u in prompts]
        base = timed(lambda b: describe_chat(b, 1), bodies * args.repeat)
        features = timed(lambda p: request_features(*p), prompts * args.repeat)
        q = lambda xs: (statistics.median(xs), sorted(xs)[int(0.99 * len(xs))])  # noqa: E731
        (bm, bp), (fm, fp) = q(base), q(features)
        print(f"| {name} | {len(prompts):,} | {bm:.1f} / {bp:.1f} | {fm:.1f} / {fp:.1f} |")


if __name__ == "__main__":
    main()
