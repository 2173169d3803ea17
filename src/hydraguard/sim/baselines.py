"""Content-based baselines from the literature, for comparison with hydraguard (docs/simulator.md, "Baselines").

- `Prada` (Juuti et al., EuroS&P 2019): per account, the minimum L2 distance of each new query embedding to
  the account's growing set of earlier queries; once enough distances are collected, a Shapiro-Wilk test on
  them; the account is flagged when W < delta.
- `Mmd` (Liu et al., arXiv 2606.05725, 2026): per account, RBF-kernel MMD² between the embeddings of its
  recent queries (a window) and a benign reference sample; flagged above a threshold set from benign windows.

Both read query text, so they need a provider that keeps prompt text (`events.keep_prompt_text`; simulations
made with `--materialize-text`): they declare `needs_prompt_text`. Both look at a deterministic sample of
queries, chosen by content (`prompt_ref`), because the numpy MiniLM embeds about 30 texts a second on two
cores. Their thresholds, the MMD reference sample and bandwidth come from a `Calibration` computed on benign
traffic that is not the evaluation traffic (`calibrate`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy.stats import shapiro

from hydraguard.sim.detector import Flag
from hydraguard.sim.embeddings import Backend, Embedder, available_backend, shared_embedder

CALIBRATION_ENV = "HYDRAGUARD_BASELINE_CALIBRATION"
SAMPLE_RATE = 1 / 16  # share of distinct prompts the baselines embed and examine
PRADA_MIN_SAMPLES = 30  # distances before the first Shapiro-Wilk test
PRADA_MAX_SAMPLES = 5_000  # scipy's W is exact up to here; later tests use the most recent distances
MMD_WINDOW = 20  # an account's queries per MMD test
MMD_REFERENCE = 500  # benign queries in the reference sample
TARGET_ACCOUNT_FPR = 0.01  # share of benign calibration accounts each threshold would flag


def sampled(refs: pa.Array | pa.ChunkedArray, rate: float) -> np.ndarray:
    """Which prompts are examined: those whose content hash falls in the first `rate` of its range, so a
    prompt is in or out for every account and every run."""
    prefix = pc.utf8_slice_codeunits(refs.fill_null("p_ffffffff"), 2, 10)
    values = np.array([int(p, 16) for p in prefix.to_pylist()], dtype=np.int64)
    return values < int(rate * 2**32)


@dataclass(frozen=True)
class Queries:
    """The examined queries of a batch, in time order: who sent them, when, and their embeddings."""

    accounts: list[str]
    times: np.ndarray
    vectors: np.ndarray


def examined(batch: pa.RecordBatch, embedder: Embedder, rate: float) -> Queries:
    """Served requests with text whose prompt is in the sample (refused requests carry no content)."""
    table = pa.Table.from_batches([batch]).select(["time", "account_id", "status", "prompt_ref", "prompt_text"])
    keep = pc.and_(pc.equal(table["status"], 200), pc.is_valid(table["prompt_text"]))
    keep = pc.and_(keep, pc.is_valid(table["account_id"]))
    table = table.filter(keep)
    table = table.filter(pa.array(sampled(table["prompt_ref"], rate), pa.bool_()))
    vectors = embedder.embed(table["prompt_ref"].to_pylist(), table["prompt_text"].to_pylist())
    return Queries(table["account_id"].to_pylist(), table["time"].to_numpy(), vectors)


def _missing_text(batch: pa.RecordBatch) -> bool:
    served = pc.equal(batch.column("status"), 200)
    return bool(pc.any(pc.and_(served, pc.is_null(batch.column("prompt_text")))).as_py())


@dataclass
class Calibration:
    """What both baselines learn from benign traffic, and where it came from."""

    backend: str
    sample_rate: float
    prada_delta: float
    mmd_threshold: float
    mmd_bandwidth: float
    mmd_reference: np.ndarray
    source: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        meta = {k: v for k, v in self.__dict__.items() if k != "mmd_reference"}
        np.savez(path, mmd_reference=self.mmd_reference, meta=np.array(json.dumps(meta)))

    @classmethod
    def load(cls, path: Path) -> Calibration:
        with np.load(path) as data:
            return cls(mmd_reference=data["mmd_reference"], **json.loads(str(data["meta"])))


def load_calibration(path: Path | None = None) -> Calibration:
    """The calibration file at `path`, or named by HYDRAGUARD_BASELINE_CALIBRATION."""
    if path is None:
        named = os.environ.get(CALIBRATION_ENV)
        if not named:
            raise RuntimeError(
                f"the prada and mmd baselines need a calibration on benign traffic: set {CALIBRATION_ENV} to a "
                "file made by hydraguard.sim.baselines.calibrate (docs/simulator.md, 'Baselines')"
            )
        path = Path(named)
    if not path.is_file():
        raise FileNotFoundError(f"no baseline calibration file {path}")
    return Calibration.load(path)


class _TextDetector:
    """What both baselines share: prompt text in, embeddings of the sampled queries, the calibration."""

    needs_prompt_text = True
    base_name = ""

    def __init__(self, calibration: Calibration | None = None, backend: Backend | None = None) -> None:
        self.calibration = calibration or load_calibration()
        self.backend: Backend = backend or available_backend()
        if self.calibration.backend != self.backend:
            raise ValueError(
                f"calibration is for {self.calibration.backend} embeddings, this detector uses {self.backend}"
            )
        # the backend is part of the name, so every table says which embeddings produced it
        self.name = self.base_name if self.backend == "minilm" else f"{self.base_name}-{self.backend}"
        self.embedder = shared_embedder(self.backend)
        self.scores: dict[str, float] = {}
        self._flagged: set[str] = set()

    def start(self, registry: dict[str, pa.Table]) -> None:
        self.scores.clear()
        self._flagged.clear()
        self._reset()

    def _reset(self) -> None:
        raise NotImplementedError

    def account_scores(self) -> dict[str, float]:
        """Each examined account's highest suspicion so far (1.0: at the threshold), for ROC curves."""
        return dict(self.scores)

    def observe(self, batch: pa.RecordBatch) -> list[Flag]:
        if _missing_text(batch):
            raise ValueError(f"{self.name} needs prompt text: served events without prompt_text")
        return self.consume(examined(batch, self.embedder, self.calibration.sample_rate))

    def consume(self, queries: Queries) -> list[Flag]:
        """Flags raised by embedded queries (suspicion 1.0 or more; an account is flagged once)."""
        flags = []
        for account, time, suspicion in self._suspicions(queries):
            self.scores[account] = max(self.scores.get(account, -np.inf), suspicion)
            if suspicion >= 1.0 and account not in self._flagged:
                self._flagged.add(account)
                flags.append(Flag(account, float(time), suspicion, f"{self.base_name}:{suspicion:.3f}"))
        return flags

    def _suspicions(self, queries: Queries) -> Iterator[tuple[str, float, float]]:
        raise NotImplementedError


class _PradaAccount:
    """One account's PRADA state: the growing set G, the distance set D and its threshold."""

    def __init__(self, dim: int) -> None:
        self.growing = np.zeros((16, dim), dtype=np.float32)
        self.size = 0
        self.distances = np.zeros(64)
        self.count = 0
        self.total = 0.0
        self.squares = 0.0
        self.threshold = 0.0

    def add(self, vector: np.ndarray) -> float | None:
        """The query's minimum distance to the growing set (None for the account's first query)."""
        if self.size == 0:
            self.growing = _append(self.growing, self.size, vector)
            self.size = 1
            return None
        diff = self.growing[: self.size] - vector
        distance = float(np.sqrt((diff * diff).sum(axis=1).min()))
        self.distances = _append(self.distances, self.count, distance)
        self.count += 1
        if distance > self.threshold:
            self.growing = _append(self.growing, self.size, vector)
            self.size += 1
        self.total += distance
        self.squares += distance * distance
        mean = self.total / self.count
        std = np.sqrt(max(self.squares / self.count - mean * mean, 0.0))
        self.threshold = max(self.threshold, mean - std)
        return distance

    def recent(self) -> np.ndarray:
        return self.distances[max(0, self.count - PRADA_MAX_SAMPLES) : self.count]


def _append(array: np.ndarray, size: int, value: np.ndarray | float) -> np.ndarray:
    """`array` with `value` at `size`, doubled first when full."""
    if size == len(array):
        array = np.concatenate([array, np.zeros_like(array)])
    array[size] = value
    return array


def shapiro_w(distances: np.ndarray) -> float:
    """Shapiro-Wilk W of the distances; 1.0 (normal) when they are all equal."""
    if np.ptp(distances) == 0:
        return 1.0
    return float(shapiro(distances).statistic)


class Prada(_TextDetector):
    """PRADA: flag an account when the Shapiro-Wilk W of its minimum query distances falls below delta.

    Each new (sampled) query's minimum L2 distance to the account's growing set joins the distance set D; the
    query joins the growing set when that distance exceeds the threshold max(mean(D) - std(D)) seen so far.
    From PRADA_MIN_SAMPLES distances on, every query tests D (its most recent PRADA_MAX_SAMPLES). Suspicion is
    (1 - W) / (1 - delta): the account is flagged when W <= delta.
    """

    base_name = "prada"

    def _reset(self) -> None:
        self.accounts: dict[str, _PradaAccount] = {}

    def _suspicions(self, queries: Queries) -> Iterator[tuple[str, float, float]]:
        delta = self.calibration.prada_delta
        for account, time, vector in zip(queries.accounts, queries.times, queries.vectors, strict=True):
            state = self.accounts.get(account)
            if state is None:
                state = self.accounts[account] = _PradaAccount(len(vector))
            if state.add(vector) is None or state.count < PRADA_MIN_SAMPLES:
                continue
            yield account, time, (1.0 - shapiro_w(state.recent())) / (1.0 - delta)


def squared_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.maximum((x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T, 0.0)


def rbf(x: np.ndarray, y: np.ndarray, bandwidth: float) -> np.ndarray:
    return np.exp(-squared_distances(x, y) / (2 * bandwidth**2))


def mmd2(window: np.ndarray, reference: np.ndarray, bandwidth: float, reference_term: float | None = None) -> float:
    """Unbiased MMD² between two samples under the RBF kernel (`reference_term`: the reference's own mean
    off-diagonal kernel, when precomputed)."""
    n = len(window)
    kxx = rbf(window, window, bandwidth)
    within = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    if reference_term is None:
        reference_term = _within(reference, bandwidth)
    return float(within + reference_term - 2 * rbf(window, reference, bandwidth).mean())


def _within(sample: np.ndarray, bandwidth: float) -> float:
    k = rbf(sample, sample, bandwidth)
    return float((k.sum() - np.trace(k)) / (len(sample) * (len(sample) - 1)))


def median_bandwidth(sample: np.ndarray) -> float:
    """The median heuristic: the median pairwise distance within the sample."""
    upper = np.sqrt(squared_distances(sample, sample)[np.triu_indices(len(sample), k=1)])
    return float(np.median(upper))


class Mmd(_TextDetector):
    """Benign-calibrated MMD: every MMD_WINDOW sampled queries of an account form a window, tested against the
    benign reference sample; suspicion is MMD² / threshold."""

    base_name = "mmd"

    def _reset(self) -> None:
        self.windows: dict[str, list[np.ndarray]] = {}
        c = self.calibration
        self.reference_term = _within(c.mmd_reference, c.mmd_bandwidth)

    def _suspicions(self, queries: Queries) -> Iterator[tuple[str, float, float]]:
        c = self.calibration
        for account, time, vector in zip(queries.accounts, queries.times, queries.vectors, strict=True):
            window = self.windows.setdefault(account, [])
            window.append(vector)
            if len(window) < MMD_WINDOW:
                continue
            value = mmd2(np.stack(window), c.mmd_reference, c.mmd_bandwidth, self.reference_term)
            window.clear()
            yield account, time, value / c.mmd_threshold


# -- calibration on benign traffic ---------------------------------------------------------------------


def _run_batches(run: Path) -> Iterable[pa.RecordBatch]:
    for path in sorted((run / "events").glob("day=*/part-0.parquet")):
        yield from pq.ParquetFile(path).iter_batches(
            batch_size=65_536, columns=["time", "account_id", "status", "prompt_ref", "prompt_text"]
        )


def _half(account: str) -> int:
    return int.from_bytes(account.encode()[-4:], "big") % 2


def calibrate(
    run: Path, backend: Backend | None = None, sample_rate: float = SAMPLE_RATE, seed: int = 0
) -> Calibration:
    """Thresholds from a benign run (e.g. `legit-only` simulated with another seed): every account is benign.

    The MMD reference sample comes from half of the accounts (by account id), the benign windows that set the
    threshold from the other half. Each threshold flags TARGET_ACCOUNT_FPR of the benign accounts it could
    test: delta is that quantile of the accounts' lowest W, the MMD threshold that quantile of their highest
    MMD².
    """
    backend = backend or available_backend()
    embedder = shared_embedder(backend)
    queries = [examined(b, embedder, sample_rate) for b in _run_batches(run)]
    accounts = [a for q in queries for a in q.accounts]
    vectors = np.concatenate([q.vectors for q in queries])
    reference_side = np.array([_half(a) == 0 for a in accounts])
    pool = np.flatnonzero(reference_side)
    rng = np.random.default_rng(seed)
    reference = vectors[rng.choice(pool, size=min(MMD_REFERENCE, len(pool)), replace=False)]
    bandwidth = median_bandwidth(reference)

    # provisional thresholds that make suspicion the raw statistic: 1 - W for PRADA, MMD² for MMD
    provisional = Calibration(backend, sample_rate, 0.0, 1.0, bandwidth, reference)
    prada, mmd = Prada(provisional, backend), Mmd(provisional, backend)
    for detector in (prada, mmd):
        detector.start({})
        for q in queries:
            detector.consume(q)
    lowest_w = [1.0 - s for s in prada.scores.values()]
    # windows of the reference half would be compared with their own queries
    highest_mmd = [s for a, s in mmd.scores.items() if _half(a) == 1]
    if not lowest_w or not highest_mmd:
        raise ValueError(f"{run}: too few benign accounts with enough sampled queries to calibrate")
    manifest = json.loads((run / "manifest.json").read_text())
    return Calibration(
        backend=backend,
        sample_rate=sample_rate,
        prada_delta=float(np.quantile(lowest_w, TARGET_ACCOUNT_FPR)),
        mmd_threshold=float(np.quantile(highest_mmd, 1 - TARGET_ACCOUNT_FPR)),
        mmd_bandwidth=bandwidth,
        mmd_reference=reference,
        source={
            "run": str(run),
            "scenario": manifest.get("scenario"),
            "seed": manifest.get("seed"),
            "corpora": {k: ("builtin" if v.get("builtin") else v.get("path")) for k, v in manifest["corpora"].items()},
            "examined_queries": len(vectors),
            "prada_accounts": len(lowest_w),
            "mmd_accounts": len(highest_mmd),
        },
    )
