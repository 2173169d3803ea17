"""PRADA and MMD baselines: their statistics on synthetic embeddings, the content sample, the prompt-text
contract with the harness, and calibration plus evaluation on short simulated runs (hashing embeddings)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from hydraguard.events.schema import ARROW_SCHEMA
from hydraguard.sim import evaluate, generate
from hydraguard.sim.baselines import (
    PRADA_MIN_SAMPLES,
    Calibration,
    Mmd,
    Prada,
    Queries,
    calibrate,
    load_calibration,
    median_bandwidth,
    mmd2,
    sampled,
)
from hydraguard.sim.detector import BUILTIN
from tests.sim.conftest import shortened

DIM = 32


def _calibration(**changes: Any) -> Calibration:
    rng = np.random.default_rng(1)
    reference = _unit(rng.normal(size=(200, DIM)))
    values = dict(
        backend="hashing",
        sample_rate=1.0,
        prada_delta=0.9,
        mmd_threshold=0.05,
        mmd_bandwidth=median_bandwidth(reference),
        mmd_reference=reference,
    )
    return Calibration(**(values | changes))


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _queries(account: str, vectors: np.ndarray) -> Queries:
    return Queries([account] * len(vectors), np.arange(len(vectors), dtype=float), vectors)


def test_sample_is_by_content_and_of_the_requested_size() -> None:
    refs = pa.array([f"p_{i * 2654435761 % 2**32:08x}{i:016x}" for i in range(4000)] + [None])
    quarter = sampled(refs, 0.25)
    assert 0.2 < quarter.mean() < 0.3 and not quarter[-1]
    assert sampled(refs, 1.0)[:-1].all() and not sampled(refs, 0.0).any()
    assert np.array_equal(sampled(refs[::-1], 0.25), quarter[::-1])  # per prompt, not per position


def test_mmd_statistic() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(300, DIM))
    same = rng.normal(size=(40, DIM))
    shifted = rng.normal(loc=0.5, size=(40, DIM))
    bandwidth = median_bandwidth(reference)
    assert bandwidth == pytest.approx(np.sqrt(2 * DIM), rel=0.1)  # distance of two standard normal points
    assert abs(mmd2(same, reference, bandwidth)) < 0.02 < mmd2(shifted, reference, bandwidth)
    assert median_bandwidth(np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 8.0]])) == pytest.approx(5.0)


def test_prada_flags_skewed_distances_not_natural_ones() -> None:
    rng = np.random.default_rng(2)
    prada = Prada(_calibration(), "hashing")
    prada.start({})
    # natural queries: independent random directions, minimum distances roughly normal
    natural = _unit(rng.normal(size=(120, DIM)))
    assert prada.consume(_queries("benign", natural)) == []
    # synthetic queries: small perturbations of a few seeds, then a jump to a new seed, over and over
    seeds = _unit(rng.normal(size=(12, DIM)))
    probes = _unit(np.repeat(seeds, 10, axis=0) + 0.02 * rng.normal(size=(120, DIM)))
    flags = prada.consume(_queries("attacker", probes))
    assert [f.account_id for f in flags] == ["attacker"]
    assert flags[0].flagged_at >= PRADA_MIN_SAMPLES and flags[0].score >= 1.0
    scores = prada.account_scores()
    assert scores["attacker"] >= 1.0 > scores["benign"]
    assert prada.consume(_queries("attacker", probes[:40])) == []  # flagged once


def test_prada_needs_enough_distances() -> None:
    prada = Prada(_calibration(prada_delta=0.99), "hashing")
    prada.start({})
    few = _unit(np.random.default_rng(3).normal(size=(PRADA_MIN_SAMPLES, DIM)))
    assert prada.consume(_queries("a", few)) == [] and prada.account_scores() == {}


def test_mmd_flags_windows_unlike_the_reference() -> None:
    calibration = _calibration()
    mmd = Mmd(calibration, "hashing")
    mmd.start({})
    rng = np.random.default_rng(4)
    like = _unit(rng.normal(size=(60, DIM)))
    unlike = _unit(rng.normal(loc=0.6, size=(60, DIM)))
    assert mmd.consume(_queries("benign", like)) == []
    flags = mmd.consume(_queries("campaign", unlike))
    assert [f.account_id for f in flags] == ["campaign"] and flags[0].flagged_at == 19  # the first full window
    assert mmd.account_scores()["campaign"] > 1.0 > mmd.account_scores()["benign"]


def test_calibration_must_match_the_backend_and_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="calibration is for hashing embeddings"):
        Prada(_calibration(), "minilm")
    monkeypatch.delenv("HYDRAGUARD_BASELINE_CALIBRATION", raising=False)
    with pytest.raises(RuntimeError, match="HYDRAGUARD_BASELINE_CALIBRATION"):
        BUILTIN["prada"]()
    monkeypatch.setenv("HYDRAGUARD_BASELINE_CALIBRATION", str(tmp_path / "missing.npz"))
    with pytest.raises(FileNotFoundError, match=r"missing\.npz"):
        BUILTIN["mmd"]()
    _calibration().save(tmp_path / "c.npz")
    loaded = load_calibration(tmp_path / "c.npz")
    assert loaded.prada_delta == 0.9 and np.array_equal(loaded.mmd_reference, _calibration().mmd_reference)


def test_a_text_detector_refuses_events_without_text() -> None:
    prada = Prada(_calibration(), "hashing")
    prada.start({})
    row = {name: [None] for name in ARROW_SCHEMA.names} | {
        "time": [1.0],
        "request_id": ["req_1"],
        "endpoint": ["/v1/chat/completions"],
        "account_id": ["a"],
        "status": [200],
        "prompt_ref": ["p_00000000"],
    }
    batch = pa.RecordBatch.from_pydict(row, schema=ARROW_SCHEMA)
    with pytest.raises(ValueError, match="needs prompt text"):
        prada.observe(batch)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A benign run for calibration (legit-only with another seed), and a campaign run with and without text."""
    base = tmp_path_factory.mktemp("baselines")
    benign, text, bare = base / "benign", base / "text", base / "bare"
    generate.simulate(shortened("legit-only", 1, seed=424242), benign, materialize_text=True)
    generate.simulate(shortened("seed-hydra-small", 1), text, materialize_text=True)
    generate.simulate(shortened("seed-hydra-small", 1), bare)
    return benign, text, bare


class Spy(Prada):
    """PRADA that keeps what the harness gives it."""

    def observe(self, batch: pa.RecordBatch) -> list:
        self.batches.append(batch)
        return super().observe(batch)

    def start(self, registry: dict[str, pa.Table]) -> None:
        self.batches: list[pa.RecordBatch] = []
        super().start(registry)


def test_calibrate_and_evaluate_on_simulated_runs(runs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    benign, text, bare = runs
    calibration = calibrate(benign, "hashing", sample_rate=0.5)
    assert 0 < calibration.prada_delta < 1 and calibration.mmd_threshold > 0 and calibration.mmd_bandwidth > 0
    assert calibration.source["seed"] == 424242 and calibration.source["prada_accounts"] > 0
    assert calibration.mmd_reference.shape == (500, 1024)

    spy = Spy(calibration, "hashing")
    with pytest.raises(ValueError, match="simulated without it"):
        evaluate.evaluate_run(spy, bare)
    row = evaluate.evaluate_run(spy, text)
    # the detector saw events and nothing else: prompt text, and no ground-truth column
    assert all(b.schema.equals(ARROW_SCHEMA) for b in spy.batches)
    served = pa.Table.from_batches(spy.batches).filter(pa.compute.equal(pa.compute.field("status"), 200))
    assert served.column("prompt_text").null_count == 0
    assert row["detector"] == "prada-hashing" and row["roc"] is not None
    assert 0.0 <= row["roc"]["auc"] <= 1.0 and row["roc"]["fpr"][-1] == row["roc"]["tpr"][-1] == 1.0
    assert set(spy.account_scores()) <= set(pa.Table.from_batches(spy.batches).column("account_id").to_pylist())

    rows = [row, evaluate.evaluate_run(Mmd(calibration, "hashing"), text)]
    assert rows[1]["detector"] == "mmd-hashing"
    written = evaluate.plots(rows, tmp_path)
    assert [p.name for p in written] == ["tokens-seed-hydra-small.png", "roc-seed-hydra-small.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written)


def test_a_detector_that_reads_no_text_is_not_given_the_text(runs: tuple[Path, Path, Path]) -> None:
    """On a run with text, a detector without `needs_prompt_text` gets the same events with `prompt_text` null (its
    bytes are not even read), as from a run without text, and flags the same accounts at the same times."""
    _, text, bare = runs
    given = list(evaluate.batches(text, with_text=False))
    assert all(b.schema.equals(ARROW_SCHEMA) and b.column("prompt_text").null_count == b.num_rows for b in given)
    with_text = pa.Table.from_batches(list(evaluate.batches(text)))
    assert with_text.column("prompt_text").null_count < with_text.num_rows
    assert pa.Table.from_batches(given).drop_columns("prompt_text").equals(with_text.drop_columns("prompt_text"))
    hydraguard = BUILTIN["hydraguard"]
    assert not getattr(hydraguard(), "needs_prompt_text", False)
    on_text, on_bare = (evaluate.evaluate_run(hydraguard(), run) for run in (text, bare))
    assert on_text["flags"] == on_bare["flags"] > 0
    assert (on_text["recall"], on_text["fpr"]) == (on_bare["recall"], on_bare["fpr"])
