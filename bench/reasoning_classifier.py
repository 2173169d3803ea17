#!/usr/bin/env python3
"""The extraction classifier (`hydraguard.detect.classifier`) trained and measured on the shared corpora.

Reads `../shared/data` at run time (nothing of it is written anywhere), splits it with the classifier's own
group-aware split, trains on the training side and prints Markdown:

* precision, recall, F1, false-positive rate (at the default threshold) and ROC AUC on the held-out side,
  with the training side's in-sample figures for contrast;
* per source on the held-out side: the share flagged, which is recall for an extraction source and the
  false-positive rate for a legitimate one;
* unseen T0 templates: each of the five templates left out of training in turn (the rest of the training
  side kept), and the share of its 200 prompts flagged;
* `score_one` time per prompt (median and p99 of `--calls` calls over held-out texts), batch `score` time
  per prompt, training time and saved model size.

Usage (repository root):

    .venv/bin/python bench/reasoning_classifier.py
    .venv/bin/python bench/reasoning_classifier.py --calls 1000 --skip-unseen-templates
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import sklearn

from hydraguard.detect import classifier as c

REPO_ROOT = Path(__file__).resolve().parents[1]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def _fmt(value: float) -> str:
    return "n/a" if value != value else f"{value:.3f}"  # NaN: undefined on this subset


def _sizes(records: Sequence[c.LabelledRecord]) -> str:
    positives = sum(r.label for r in records)
    groups = len(set(c.group_keys(records)))
    return f"{len(records):,} prompts ({len(records) - positives:,} legit, {positives:,} extraction; {groups:,} groups)"


def _timings(clf: c.ExtractionClassifier, texts: list[str], calls: int) -> dict[str, float]:
    samples = []
    for i in range(calls):
        text = texts[i % len(texts)]
        start = time.perf_counter_ns()
        clf.score_one(text)
        samples.append(time.perf_counter_ns() - start)
    samples.sort()
    start = time.perf_counter_ns()
    clf.score(texts)
    batch = (time.perf_counter_ns() - start) / len(texts)
    return {
        "median_us": statistics.median(samples) / 1000,
        "p99_us": samples[int(0.99 * (len(samples) - 1))] / 1000,
        "batch_us": batch / 1000,
    }


def report(args: argparse.Namespace, command: str) -> str:
    records = c.load_records(args.data_dir)
    train, test = c.split(records)
    started = time.perf_counter()
    clf = c.train(train)
    train_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.npz"
        clf.save(path)
        model_bytes = path.stat().st_size

    lines = ["### Extraction classifier (hashed word 1-2 + char_wb 3-5 grams, logistic regression)", ""]
    lines += [
        "| split | n | extraction | precision | recall | F1 | FPR | ROC AUC |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, part in (("train (in-sample)", train), ("**test (held out)**", test)):
        m = c.evaluate(clf, part)
        lines.append(
            f"| {name} | {m['n']:,} | {m['positives']:,} | {_fmt(m['precision'])} | {_fmt(m['recall'])} "
            f"| {_fmt(m['f1'])} | {_fmt(m['false_positive_rate'])} | {_fmt(m['auc'])} |"
        )

    lines += ["", "Held-out split per source (flagged = recall for extraction, false-positive rate for legit):", ""]
    lines += ["| source | label | n | flagged | mean score |", "|---|---|---|---|---|"]
    for source in sorted({r.source for r in test}, key=lambda s: (-next(r.label for r in test if r.source == s), s)):
        part = [r for r in test if r.source == source]
        m = c.evaluate(clf, part)
        mean = float(clf.score([r.text for r in part]).mean())
        label = "extraction" if part[0].label else "legit"
        lines.append(f"| {source} | {label} | {m['n']:,} | {_fmt(m['flagged_rate'])} | {mean:.3f} |")
    held_out_t0 = sorted({r.family for r in test if r.source == "selfinstruct-t0"})

    if not args.skip_unseen_templates:
        lines += ["", "Unseen T0 templates (each left out of the training side in turn; share of its prompts flagged):"]
        lines += ["", "| template | n | flagged |", "|---|---|---|"]
        t0 = [r for r in records if r.source == "selfinstruct-t0"]
        for family in sorted({r.family for r in t0}):
            model = c.train([r for r in train if r.family != family])
            part = [r for r in t0 if r.family == family]
            lines.append(f"| {family.removeprefix('t0-')} | {len(part)} | {_fmt(c.evaluate(model, part)['recall'])} |")

    timing = _timings(clf, [r.text for r in test], args.calls)
    lines += [
        "",
        f"- split: train {_sizes(train)}; test {_sizes(test)}; held-out T0 template(s): "
        f"{', '.join(held_out_t0) or 'none'}",
        f"- threshold {c.DEFAULT_THRESHOLD}; C {c.REGULARIZATION_C}; {2 * c.Features().n_features:,} hashed features; "
        f"training {train_s:.1f} s; saved model {model_bytes / 2**20:.1f} MiB (`.npz`, compressed)",
        f"- `score_one` per prompt: median {timing['median_us']:.0f} µs, p99 {timing['p99_us']:.0f} µs "
        f"({args.calls:,} calls over held-out prompts); batch `score`: {timing['batch_us']:.0f} µs per prompt",
        f"- machine: {os.cpu_count()} CPUs, {_cpu_model()}, Python {platform.python_version()}, "
        f"scikit-learn {sklearn.__version__}; date {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M:%S UTC')}",
        f"- command: `{command}`",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--data-dir",
        type=Path,
        default=REPO_ROOT.parent / "shared" / "data",
        help="the shared data folder (default ../shared/data)",
    )
    p.add_argument("--calls", type=int, default=3000, help="score_one calls timed (default 3000)")
    p.add_argument(
        "--skip-unseen-templates", action="store_true", help="skip the five leave-one-template-out trainings"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.data_dir.is_dir():
        print(f"the shared prompt corpora are not at {args.data_dir}", file=sys.stderr)
        return 1
    if args.calls < 1:
        print("--calls must be at least 1", file=sys.stderr)
        return 2
    print(report(args, " ".join([".venv/bin/python", *sys.argv])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
