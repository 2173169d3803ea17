"""The extraction classifier: group-aware split, held-out quality, model files, record-format errors.

Corpus-backed tests read `../shared/data` at run time and skip, with the reason, where it is absent.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from hydraguard.detect import classifier as c

REPO_ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

Halves = tuple[list[c.LabelledRecord], list[c.LabelledRecord]]


@pytest.fixture(scope="module")
def records() -> list[c.LabelledRecord]:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared prompt corpora are not at {SHARED_DATA} (../shared/data)")
    return c.load_records(SHARED_DATA)


@pytest.fixture(scope="module")
def halves(records: list[c.LabelledRecord]) -> Halves:
    return c.split(records)


@pytest.fixture(scope="module")
def model(halves: Halves) -> c.ExtractionClassifier:
    return c.train(halves[0])


def _opening(record: c.LabelledRecord) -> str:
    return " ".join(record.turns[0].lower().split())


def test_split_keeps_every_group_on_one_side(records: list[c.LabelledRecord], halves: Halves) -> None:
    train, test = halves
    assert len(train) + len(test) == len(records)
    assert 0.2 < len(test) / len(records) < 0.3
    keys = dict(zip((r.id for r in records), c.group_keys(records), strict=True))
    assert not {keys[r.id] for r in train} & {keys[r.id] for r in test}
    # the rules themselves, checked without group_keys
    assert not {r.family for r in train} & {r.family for r in test}
    assert not {_opening(r) for r in train} & {_opening(r) for r in test}
    t0_test = {r.family for r in test if r.source == "selfinstruct-t0"}
    assert len(t0_test) == 1
    assert {r.family for r in train if r.source == "selfinstruct-t0"}.isdisjoint(t0_test)
    assert all(r.family.startswith("oasst-en100-t") for r in records if r.source == "oasst-en100")
    seeds = {_opening(r): r in test for r in records if r.source == "alpaca-seed"}
    assert all(seeds[_opening(r)] == (r in test) for r in records if r.source == "orca-sysprompt")
    assert set(Counter(r.source for r in test)) == set(Counter(r.source for r in train))


def test_split_is_deterministic_and_order_independent(records: list[c.LabelledRecord], halves: Halves) -> None:
    assert {r.id for r in c.split(records[::-1])[1]} == {r.id for r in halves[1]}
    assert [r.id for r in c.split(records)[1]] == [r.id for r in halves[1]]


def test_held_out_precision_and_recall(halves: Halves, model: c.ExtractionClassifier) -> None:
    test = halves[1]
    # measured with this split: precision 0.896, recall 0.667, AUC 0.951 (bench/reasoning_classifier.py)
    metrics = c.evaluate(model, test)
    assert metrics["n"] == len(test)
    assert metrics["threshold"] == c.DEFAULT_THRESHOLD
    assert metrics["precision"] >= 0.85
    assert metrics["recall"] >= 0.60
    assert metrics["auc"] >= 0.92
    # measured: codealpaca-2k recall 0.931, hh-harmless-test false-positive rate 0.005
    assert c.evaluate(model, [r for r in test if r.source == "codealpaca-2k"])["recall"] >= 0.85
    assert c.evaluate(model, [r for r in test if r.source == "hh-harmless-test"])["false_positive_rate"] <= 0.03


def test_save_load_round_trip_gives_identical_scores(
    tmp_path: Path, halves: Halves, model: c.ExtractionClassifier
) -> None:
    texts = [r.text for r in halves[1][:300]]
    path = tmp_path / "models" / "reasoning-classifier.npz"
    model.save(path)
    loaded = c.ExtractionClassifier.load(path)
    assert loaded.features == model.features
    assert np.array_equal(loaded.score(texts), model.score(texts))
    assert c.load_or_none(path) is not None
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_scoring_is_deterministic(halves: Halves, model: c.ExtractionClassifier) -> None:
    texts = [r.text for r in halves[1][:200]] + ["", "Überprüfe den Code: `x = 1` ✓", "word " * 4000]
    first = model.score(texts)
    assert np.array_equal(first, model.score(texts))
    assert np.allclose([model.score_one(t) for t in texts], first, rtol=0, atol=1e-12)
    assert ((first >= 0) & (first <= 1)).all()
    assert model.score([]).shape == (0,)
    with pytest.raises(TypeError, match="score_one"):
        model.score("one text")


def test_prompt_text_puts_the_system_prompt_first() -> None:
    assert c.prompt_text(["a", "b"], "sys") == "sys\na\nb"
    assert c.prompt_text(["a"], "") == "a"
    assert c.prompt_text(["a"]) == "a"


def _write_corpus(root: Path, legit_line: str) -> Path:
    prompts = root / "prompts"
    prompts.mkdir(parents=True)
    (prompts / "legit.jsonl").write_text(legit_line + "\n", encoding="utf-8")
    extraction = {"id": "x-000000", "source": "x", "kind": "extraction", "turns": ["t"], "system": None}
    (prompts / "extraction.jsonl").write_text(json.dumps(extraction) + "\n", encoding="utf-8")
    return root


_GOOD = {"id": "l-000000", "source": "l", "kind": "legit", "turns": ["t"], "system": None, "category": None}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "a record is a JSON object"),
        (json.dumps({k: v for k, v in _GOOD.items() if k != "turns"}), "missing field.*turns"),
        (json.dumps({**_GOOD, "turns": "t"}), "non-empty list of strings"),
        (json.dumps({**_GOOD, "turns": []}), "non-empty list of strings"),
        (json.dumps({**_GOOD, "system": 3}), "`system` must be a string or null"),
        (json.dumps({**_GOOD, "kind": "extraction"}), "`kind` is 'extraction' in a file of legit"),
    ],
)
def test_record_format_errors_name_the_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    root = _write_corpus(tmp_path, line)
    with pytest.raises(c.CorpusError, match=message) as error:
        c.load_records(root)
    assert "legit.jsonl:1:" in str(error.value)


def test_load_records_reads_a_valid_corpus_and_rejects_a_missing_file(tmp_path: Path) -> None:
    root = _write_corpus(tmp_path, json.dumps(_GOOD))
    assert [(r.id, r.label) for r in c.load_records(root)] == [("l-000000", 0), ("x-000000", 1)]
    (root / "prompts" / "extraction.jsonl").unlink()
    with pytest.raises(c.CorpusError, match="corpus file not found"):
        c.load_records(root)


def test_default_model_path_and_load_or_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRAGUARD_HOME", str(tmp_path))
    assert c.default_model_path() == tmp_path / "models" / "reasoning-classifier.npz"
    assert c.load_or_none() is None
    monkeypatch.delenv("HYDRAGUARD_HOME")
    assert c.default_model_path() == Path.home() / ".cache" / "hydraguard" / "models" / "reasoning-classifier.npz"


def test_a_bad_model_file_is_an_explicit_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(c.ModelFileError, match="not a saved classifier"):
        c.load_or_none(garbage)
    small = c.Features(n_features=2**4)
    truncated = tmp_path / "truncated.npz"
    np.savez(
        truncated,
        format_version=np.int64(c.FORMAT_VERSION),
        features=np.array(json.dumps({"n_features": small.n_features, "word_ngrams": [1, 2], "char_ngrams": [3, 5]})),
        coef=np.zeros(3),
        intercept=np.float64(0),
    )
    with pytest.raises(c.ModelFileError, match="expected 32 coefficients"):
        c.ExtractionClassifier.load(truncated)
    pickled = tmp_path / "pickled.npz"
    np.savez(
        pickled,
        format_version=np.int64(c.FORMAT_VERSION),
        features=np.array([{"n": 1}], dtype=object),
        coef=np.zeros(3),
        intercept=np.float64(0),
    )
    with pytest.raises(c.ModelFileError, match="not a saved classifier"):
        c.ExtractionClassifier.load(pickled)
