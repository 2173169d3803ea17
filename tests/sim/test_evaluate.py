"""The evaluation harness: exact metrics on a hand-built case; oracle, blind and rate-limit detectors on a
simulated scenario; `hydraguard evaluate`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from hydraguard.cli import app
from hydraguard.config import Limits
from hydraguard.events.schema import RequestEvent, events_to_table
from hydraguard.sim import evaluate
from hydraguard.sim.detector import Detector, Flag, NoDetector, RateLimits
from tests.sim.conftest import read

Run = tuple[Any, Path, dict[str, Any]]


def _event(
    time: float, account: str, tokens: tuple[int, int] | None, ref: str = "p_d", tier: str = "free"
) -> RequestEvent:
    served = tokens is not None
    return RequestEvent(
        time=time,
        request_id=f"req_{account}_{time}",
        endpoint="/v1/chat/completions",
        account_id=account,
        tier=tier,
        status=200 if served else 403,
        prompt_ref=ref if served else None,
        prompt_tokens=tokens[0] if tokens else None,
        completion_tokens=tokens[1] if tokens else None,
    )


TRUTH = pa.table(
    {
        "account_id": ["a1", "a2", "a3", "a4", "l1", "l2"],
        "campaign_id": ["c1", "c1", "c2", "c1", None, None],  # a4 sends nothing: not counted
    }
)
EVENTS = events_to_table(
    [
        _event(100, "a1", (10, 90)),
        _event(110, "l1", (10, 20), "p_o"),
        _event(120, "l2", (5, 5), "p_o"),
        _event(130, "l2", None),
        _event(150, "a2", (20, 30)),
        _event(200, "a1", (50, 50)),
        _event(300, "a1", (40, 60), "p_o"),
        _event(400, "a2", (25, 25)),
        _event(500, "l1", (35, 35), "p_o"),
        _event(1000, "a3", (100, 100)),
    ]
)
PROMPTS = pa.table({"prompt_ref": ["p_d", "p_o"], "ordinary": [False, True]})


def test_metrics_on_a_hand_built_case() -> None:
    flags = [Flag("a1", 200), Flag("l1", 300), Flag("a1", 250), Flag("nobody", 10)]
    r = evaluate.score(flags, TRUTH, EVENTS, PROMPTS)
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (1, 1, 2, 1)
    assert r["accounts"] == {"campaign": 3, "legit": 2, "inactive": 1}
    assert r["precision"] == 0.5 and r["recall"] == pytest.approx(1 / 3) and r["fpr"] == 0.5
    c1, c2 = r["campaigns"]["c1"], r["campaigns"]["c2"]
    assert c1["detected"] and c1["accounts"] == 2 and c1["accounts_flagged_share"] == 0.5 and c1["start"] == 100
    assert c1["time_to_detection_h"] == pytest.approx(100 / 3600)
    # a1 at 200 and 300 come at or after its flag; a1 at 100 and a2's two requests were served
    assert (c1["requests"], c1["requests_served_share"]) == (5, 0.6)
    assert (c1["tokens"], c1["tokens_served_share"]) == (400, 0.5)
    assert c1["distillation"]["requests"] == 4 and c1["distillation"]["requests_served_share"] == 0.75
    assert c1["distillation"]["tokens_served_share"] == pytest.approx(200 / 300)
    assert not c2["detected"] and c2["time_to_detection_h"] is None and c2["requests_served_share"] == 1.0
    assert r["campaigns_detected"] == 1 and r["time_to_detection_h_median"] == pytest.approx(100 / 3600)
    assert r["campaign"]["requests"] == 6 and r["campaign"]["requests_served_share"] == pytest.approx(4 / 6)
    assert r["campaign"]["tokens"] == 600 and r["campaign"]["tokens_served_share"] == pytest.approx(400 / 600)
    # l2's 403 was never served; l1's request at 500 is refused after its false flag at 300
    assert r["legit_requests_refused"] == 1 and r["legit_requests_refused_share"] == pytest.approx(1 / 3)
    assert r["legit_tokens_refused"] == 70


def test_false_positives_by_population_and_hard_negatives() -> None:
    truth = TRUTH.append_column("population", pa.array(["hydra", "hydra", "probe", "hydra", "labelling", "devs"]))
    truth = truth.append_column("hard_negative", pa.array([False, False, False, False, True, False]))
    r = evaluate.score([Flag("a1", 200), Flag("l1", 300), Flag("a4", 50)], truth, EVENTS, PROMPTS)
    # a4 sent nothing: neither counted nor flagged in its population
    assert r["populations"] == {
        "devs": {"accounts": 1, "flagged": 0},
        "hydra": {"accounts": 2, "flagged": 1},
        "labelling": {"accounts": 1, "flagged": 1},
        "probe": {"accounts": 1, "flagged": 0},
    }
    assert r["hard_negatives_flagged"] == 1
    unlabelled = evaluate.score([Flag("l1", 300)], TRUTH, EVENTS, PROMPTS)
    assert unlabelled["populations"] == {} and unlabelled["hard_negatives_flagged"] == 0


def test_flags_beside_the_truth() -> None:
    table = evaluate.flags_table([Flag("l1", 300, 0.5, "r2"), Flag("a1", 200, 0.9, "r1"), Flag("x", 1)], TRUTH)
    assert table.column_names == ["account_id", "flagged_at", "score", "reason", "campaign_id"]
    assert table.to_pylist() == [
        {"account_id": "x", "flagged_at": 1.0, "score": 1.0, "reason": "", "campaign_id": None},
        {"account_id": "a1", "flagged_at": 200.0, "score": 0.9, "reason": "r1", "campaign_id": "c1"},
        {"account_id": "l1", "flagged_at": 300.0, "score": 0.5, "reason": "r2", "campaign_id": None},
    ]


def test_rate_limits_flag_the_request_over_the_limit() -> None:
    tiers = {"free": Limits(rpm=2, tpd=150)}
    events = events_to_table(
        [
            _event(0, "x", (1, 1)),
            _event(10, "x", (1, 1)),
            _event(50, "y", (50, 50)),
            _event(59, "x", (1, 1)),  # third in the minute: over rpm 2
            _event(61, "x", (1, 1)),
            _event(3600, "y", (40, 40)),  # 180 tokens in the day: over tpd 150
            _event(86_400 + 10, "z", (100, 100)),
        ]
    )
    detector = RateLimits(tiers)
    assert isinstance(detector, Detector)
    flags = evaluate.run_detector(detector, {}, events.to_batches(max_chunksize=2))
    assert [(f.account_id, f.flagged_at, f.reason) for f in flags] == [
        ("x", 59, "free:rpm>2"),
        ("y", 3600, "free:tpd>150"),
        ("z", 86_410, "free:tpd>150"),
    ]


def test_flags_from_the_future_are_refused() -> None:
    class Prophet(NoDetector):
        name = "prophet"

        def observe(self, batch: pa.RecordBatch) -> list[Flag]:
            return [Flag("a3", 1000)]

    with pytest.raises(ValueError, match="after"):
        evaluate.run_detector(Prophet(), {}, EVENTS.to_batches(max_chunksize=3))


class Oracle(NoDetector):
    """Knows the truth: flags every campaign account at its first request."""

    name = "oracle"

    def __init__(self, campaign: set[str]) -> None:
        self.campaign = campaign
        self.flagged: set[str] = set()

    def observe(self, batch: pa.RecordBatch) -> list[Flag]:
        flags = []
        for time, account in zip(batch.column("time").to_pylist(), batch.column("account_id").to_pylist(), strict=True):
            if account in self.campaign and account not in self.flagged:
                self.flagged.add(account)
                flags.append(Flag(account, time, 1.0, "oracle"))
        return flags


def test_oracle_and_blind_detectors(small_run: Run) -> None:
    _, out, _ = small_run
    truth = read(out, "truth.parquet")
    campaign = set(truth.filter(pc.field("role") == "campaign").column("account_id").to_pylist())
    assert campaign
    oracle = evaluate.evaluate_run(Oracle(campaign), out)
    assert oracle["recall"] == 1.0 and oracle["precision"] == 1.0 and oracle["fpr"] == 0.0
    assert oracle["campaigns_detected"] == len(oracle["campaigns"]) >= 1
    assert oracle["campaign"]["requests"] > 10_000
    assert oracle["campaign"]["requests_served_share"] == 0.0 and oracle["campaign"]["tokens_served_share"] == 0.0
    assert oracle["legit_requests_refused"] == 0
    assert all(0 <= c["time_to_detection_h"] < 1 for c in oracle["campaigns"].values())

    blind = evaluate.evaluate_run(NoDetector(), out)
    assert blind["recall"] == 0.0 and blind["fpr"] == 0.0 and blind["precision"] is None
    assert blind["campaigns_detected"] == 0 and blind["flags"] == 0
    assert blind["campaign"]["requests_served_share"] == 1.0 and blind["campaign"]["tokens_served_share"] == 1.0
    assert blind["distillation"]["requests_served_share"] == 1.0
    assert 0 < blind["distillation"]["requests"] < blind["campaign"]["requests"]  # the proxy's customers
    assert blind["legit_requests_refused"] == 0


def _in_unit(value: float | None) -> bool:
    return value is None or (0.0 <= value <= 1.0 and not math.isnan(value))


def test_rate_limit_baseline_end_to_end(small_run: Run, tmp_path: Path) -> None:
    _, out, _ = small_run
    result = CliRunner().invoke(
        app, ["evaluate", str(out), "--out", str(tmp_path), "--detector", "rate-limits", "--detector", "none"]
    )
    assert result.exit_code == 0, result.output
    assert "| rate-limits | seed-hydra-small |" in result.output and "corpora:" in result.output
    rows = json.loads((tmp_path / "evaluation.json").read_text())
    assert [r["detector"] for r in rows] == ["rate-limits", "none"]
    assert (tmp_path / "evaluation.md").read_text().count("\n") == 4
    r = rows[0]
    for key in ("precision", "recall", "fpr", "legit_requests_refused_share"):
        assert _in_unit(r[key]), key
    for part in (r["campaign"], r["distillation"]):
        assert _in_unit(part["requests_served_share"]) and _in_unit(part["tokens_served_share"])
    assert r["tp"] + r["fn"] == r["accounts"]["campaign"] and r["fp"] + r["tn"] == r["accounts"]["legit"]
    assert sum(p["accounts"] for p in r["populations"].values()) == r["tp"] + r["fn"] + r["fp"] + r["tn"]
    flags = pq.read_table(tmp_path / evaluate.flags_file("rate-limits", out))
    assert flags.num_rows == r["flags"] and "population" in flags.column_names
    assert pq.read_table(tmp_path / evaluate.flags_file("none", out)).num_rows == 0


def test_evaluate_refuses_a_directory_without_truth(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "not a simulation output" in result.output


def test_tokens_over_time_and_roc_on_the_hand_built_case() -> None:
    scores = {"a1": 0.9, "a2": 0.2, "l1": 0.5, "l2": 0.1}  # a3 unscored: no threshold flags it
    r = evaluate.score([Flag("a1", 200)], TRUTH, EVENTS, PROMPTS, scores)
    series = r["campaign_tokens_over_time"]
    assert series["start"] == 100 and series["bin_hours"] == evaluate.SERIES_BIN_HOURS
    # every event falls in the first bin: campaign tokens 100 + 50 + 100 + 100 + 50 + 200, of which a1's
    # requests at 200 and 300 come after its flag
    assert series["without_defence"] == [600] and series["with_defence"] == [400]
    roc = r["roc"]
    # thresholds from the highest score down: a1 (tp), l1 (fp), a2 (tp), l2 (fp), then a3 never
    assert roc["tpr"] == pytest.approx([0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1])
    assert roc["fpr"] == pytest.approx([0, 0, 0.5, 0.5, 1, 1])
    assert roc["auc"] == pytest.approx(0.5 * 1 / 3 + 0.5 * 2 / 3)
    assert evaluate.score([], TRUTH, EVENTS, PROMPTS)["roc"] is None  # no scores, no curve
    assert evaluate.roc_curve(np.array([0.3, 0.1]), np.array([True, True])) is None  # one class only


def test_plots_for_a_run_without_campaign(tmp_path: Path) -> None:
    legit = TRUTH.filter(pc.is_null(pc.field("campaign_id")))
    events = EVENTS.filter(pc.is_in(pc.field("account_id"), value_set=legit.column("account_id")))
    row = {"detector": "none", "scenario": "legit-only", "run": "r", **evaluate.score([], legit, events)}
    assert row["campaign_tokens_over_time"]["without_defence"] == [0]
    assert evaluate.plots([row], tmp_path) == []  # nothing leaked to plot, no positives for a ROC
