"""Request-level feature cost: `detect.request.request_features` per prompt, median and p99, on the shared prompt
corpora, next to the gateway's own `describe_chat` on the same request bodies (the baseline each request already
pays). Target (issue 4): <= 50 microseconds median per request.

    .venv/bin/python bench/request_features.py [--repeat 3]
    .venv/bin/python bench/request_features.py --against HEAD~1   # interleaved A/B against an earlier commit

With `--against REV`, `detect/request.py` as of that commit is loaded beside the current one and every prompt is
timed with both, one after the other, so both medians come from the same moments of a noisy machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import msgspec

from hydraguard.detect import request
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


def module_at(revision: str) -> ModuleType:
    """`hydraguard.detect.request` as of `revision`, reading the current pattern files."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(
        ["git", "show", f"{revision}:src/hydraguard/detect/request.py"], cwd=root, check=True, capture_output=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "request_before.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("request_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    module.PATTERNS_DIR = request.PATTERNS_DIR
    return module


def interleaved(before: Callable[..., object], after: Callable[..., object], prompts: list[tuple[str, str]]) -> None:
    times: tuple[list[float], list[float]] = ([], [])
    for prompt in prompts:
        for fn, out in ((before, times[0]), (after, times[1])):
            start = time.perf_counter_ns()
            fn(*prompt)
            out.append((time.perf_counter_ns() - start) / 1e3)
    b, a = (statistics.median(t) for t in times)
    print(f"  before {b:.1f} µs, after {a:.1f} µs median ({a / b - 1:+.1%})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--against", metavar="REV", help="also time the code of this git revision, interleaved")
    args = parser.parse_args()
    if args.against:
        before = module_at(args.against).request_features
        for name in ("legit.jsonl", "extraction.jsonl"):
            print(f"{name} against {args.against}:")
            interleaved(before, request_features, load(name) * args.repeat)
        return
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
