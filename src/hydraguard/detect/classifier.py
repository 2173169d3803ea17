"""A light text classifier: how much a prompt looks like model-extraction (distillation) traffic.

Features are stateless hashes (word 1-2 grams and char_wb 3-5 grams, each L2-normalised), the model is a
class-balanced logistic regression, so a trained model is its coefficients, its intercept and the hashing
parameters, saved as `.npz` without pickle. The text of a prompt is the system prompt, if any, followed by
the user turns, joined with newlines.

The training corpora (`../shared/data/prompts`, see its README) may not be redistributed, and neither may
weights derived from them, so no model ships with the package: the product trains one on demand into
`default_model_path()` and `load_or_none()` returns None until then (callers use the pattern set alone).

Held-out split, deterministic and group-aware so that near-duplicates never straddle train and test:

* A record's family is its template for T0 (`t0-<template>`, i.e. the whole template file), its tree for
  OASST threads (`oasst-en100-t<tree>`), and its own id otherwise.
* Families are merged when they share a first user turn (compared lower-cased, whitespace collapsed). This puts
  each Orca record with the alpaca seed it repeats, and joins HH or OASST conversations that open alike.
* A merged group's key is its smallest family, and its stratum is that family's source. Within each stratum the
  groups are ranked by the SHA-256 of their key and the first `test_fraction` of them (rounded half up) go to
  test. Ranking rather than thresholding the hash keeps every source on both sides: the five T0 templates
  would otherwise easily all land in train. Nothing depends on a random state.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.special import expit
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score
from sklearn.utils import murmurhash3_32

FORMAT_VERSION = 1
DEFAULT_THRESHOLD = 0.5
TEST_FRACTION = 0.25
REGULARIZATION_C = 10.0  # chosen by grouped cross-validation on the training split only

LEGIT_FILE = "prompts/legit.jsonl"
EXTRACTION_FILE = "prompts/extraction.jsonl"
TEMPLATES_GLOB = "prompts/extraction_templates/*.jsonl"

_LABELS = {"legit": 0, "extraction": 1}
_OASST_THREAD = re.compile(r"^(oasst-en100-t\d+)-p\d+$")
_T0_LINE = re.compile(r"^(t0-.+)-\d+$")


class CorpusError(ValueError):
    """A corpus file is missing or a record does not have the shared record format."""


class ModelFileError(ValueError):
    """A saved model cannot be read: not an `.npz` of this format, or inconsistent arrays."""


def prompt_text(turns: Sequence[str], system: str | None = None) -> str:
    """The text the classifier scores: the system prompt (if any) then the user turns, one per line."""
    return "\n".join([system, *turns] if system else turns)


@dataclass(frozen=True, slots=True)
class LabelledRecord:
    id: str
    source: str
    label: int  # 1 = extraction, 0 = legitimate
    turns: tuple[str, ...]  # the user turns
    system: str | None = None
    category: str | None = None

    @property
    def text(self) -> str:
        return prompt_text(self.turns, self.system)

    @property
    def family(self) -> str:
        """Records of one family are near-duplicates by construction (one T0 template, one OASST tree)."""
        match = _T0_LINE.match(self.id) or _OASST_THREAD.match(self.id)
        return match.group(1) if match else self.id


def _parse(line: str, where: str, label: int) -> LabelledRecord:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{where}: not JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise CorpusError(f"{where}: a record is a JSON object, got {type(raw).__name__}")
    missing = {"id", "source", "turns", "kind"} - raw.keys()
    if missing:
        raise CorpusError(f"{where}: missing field(s) {', '.join(sorted(missing))}")
    turns, system, category = raw["turns"], raw.get("system"), raw.get("category")
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
        raise CorpusError(f"{where}: `turns` must be a non-empty list of strings")
    if not isinstance(raw["id"], str) or not isinstance(raw["source"], str):
        raise CorpusError(f"{where}: `id` and `source` must be strings")
    if system is not None and not isinstance(system, str):
        raise CorpusError(f"{where}: `system` must be a string or null")
    if category is not None and not isinstance(category, str):
        raise CorpusError(f"{where}: `category` must be a string or null")
    if _LABELS.get(raw["kind"]) != label:
        raise CorpusError(f"{where}: `kind` is {raw['kind']!r} in a file of {'extraction' if label else 'legit'}")
    return LabelledRecord(raw["id"], raw["source"], label, tuple(turns), system, category)


def _read(path: Path, label: int) -> list[LabelledRecord]:
    with path.open(encoding="utf-8") as lines:
        return [_parse(line, f"{path}:{n}", label) for n, line in enumerate(lines, 1) if line.strip()]


def load_records(data_dir: Path | str) -> list[LabelledRecord]:
    """The labelled corpora under `data_dir` (the shared `data` folder): legit (0), extraction and the
    filled T0 templates (1). Read at run time; raises CorpusError for a missing file or a malformed record."""
    root = Path(data_dir)
    paths = [(root / LEGIT_FILE, 0), (root / EXTRACTION_FILE, 1)]
    paths += [(path, 1) for path in sorted(root.glob(TEMPLATES_GLOB))]
    records: list[LabelledRecord] = []
    for path, label in paths:
        if not path.is_file():
            raise CorpusError(f"corpus file not found: {path}")
        records += _read(path, label)
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        raise CorpusError(f"duplicate record ids under {root}")
    return records


def _normalised(text: str) -> str:
    return " ".join(text.lower().split())


def group_keys(records: Sequence[LabelledRecord]) -> list[str]:
    """Each record's split group (module docstring): families merged when they share a first user turn."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    opening: dict[str, str] = {}
    for record in records:
        family = record.family
        union(family, opening.setdefault(_normalised(record.turns[0]), family))
    return [find(record.family) for record in records]


def split(
    records: Sequence[LabelledRecord], test_fraction: float = TEST_FRACTION
) -> tuple[list[LabelledRecord], list[LabelledRecord]]:
    """(train, test) by group, stratified by source (module docstring), each in the records' order."""
    keys = group_keys(records)
    strata: dict[str, set[str]] = {}
    for record, key in zip(records, keys, strict=True):
        if record.family == key:
            strata.setdefault(record.source, set()).add(key)
    test_groups: set[str] = set()
    for groups in strata.values():
        ranked = sorted(groups, key=lambda g: (hashlib.sha256(g.encode()).digest(), g))
        test_groups.update(ranked[: int(len(ranked) * test_fraction + 0.5)])
    train = [r for r, key in zip(records, keys, strict=True) if key not in test_groups]
    test = [r for r, key in zip(records, keys, strict=True) if key in test_groups]
    return train, test


@dataclass(frozen=True, slots=True)
class Features:
    """Hashing parameters: with them a model's coefficients are all there is to save."""

    n_features: int = 2**18  # per analyzer; the model has twice as many coefficients
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (3, 5)

    def vectorizers(self) -> tuple[HashingVectorizer, HashingVectorizer]:
        common = {"n_features": self.n_features, "alternate_sign": False, "lowercase": True, "norm": "l2"}
        return (
            HashingVectorizer(analyzer="word", ngram_range=self.word_ngrams, **common),
            HashingVectorizer(analyzer="char_wb", ngram_range=self.char_ngrams, **common),
        )


class ExtractionClassifier:
    """P(extraction) for prompt texts (see `prompt_text`)."""

    def __init__(self, features: Features, coef: np.ndarray, intercept: float) -> None:
        if coef.shape != (2 * features.n_features,):
            raise ModelFileError(f"expected {2 * features.n_features} coefficients, got shape {coef.shape}")
        self.features = features
        self.coef = coef
        self.intercept = intercept
        self._vectorizers = features.vectorizers()
        self._analyzers = [v.build_analyzer() for v in self._vectorizers]

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        return sp.hstack([v.transform(texts) for v in self._vectorizers], format="csr")

    def score(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("score() takes a sequence of texts; use score_one() for a single text")
        if not texts:
            return np.empty(0)
        return expit(self.transform(texts) @ self.coef + self.intercept)

    def score_one(self, text: str) -> float:
        # HashingVectorizer's own hashing (murmurhash3 of the UTF-8 gram, |h| mod n_features, L2 norm) without
        # its per-call validation: about 6x faster on a short prompt. The tests hold it equal to `score`.
        n = self.features.n_features
        logit = self.intercept
        for offset, analyzer in zip((0, n), self._analyzers, strict=True):
            counts = Counter(abs(murmurhash3_32(gram, seed=0)) % n for gram in analyzer(text))
            if counts:
                values = np.fromiter(counts.values(), np.float64, len(counts))
                indices = np.fromiter(counts.keys(), np.int64, len(counts)) + offset
                logit += float(values @ self.coef[indices]) / math.sqrt(float(values @ values))
        return float(expit(logit))

    def save(self, path: Path | str) -> None:
        """Write atomically (a model may be read while it is retrained), creating parent folders."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        with partial.open("wb") as out:
            np.savez_compressed(
                out,
                format_version=np.int64(FORMAT_VERSION),
                features=np.array(json.dumps(asdict(self.features))),
                coef=self.coef.astype(np.float64),
                intercept=np.float64(self.intercept),
            )
        os.replace(partial, target)

    @classmethod
    def load(cls, path: Path | str) -> ExtractionClassifier:
        try:
            with np.load(path, allow_pickle=False) as saved:
                arrays = {key: saved[key] for key in saved.files}
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"{path}: not a saved classifier ({exc})") from None
        missing = {"format_version", "features", "coef", "intercept"} - arrays.keys()
        if missing:
            raise ModelFileError(f"{path}: missing array(s) {', '.join(sorted(missing))}")
        if int(arrays["format_version"]) != FORMAT_VERSION:
            raise ModelFileError(f"{path}: format version {int(arrays['format_version'])}, expected {FORMAT_VERSION}")
        try:
            params = json.loads(str(arrays["features"]))
            features = Features(
                n_features=int(params["n_features"]),
                word_ngrams=(int(params["word_ngrams"][0]), int(params["word_ngrams"][1])),
                char_ngrams=(int(params["char_ngrams"][0]), int(params["char_ngrams"][1])),
            )
        except (json.JSONDecodeError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}: unreadable hashing parameters ({exc})") from None
        try:
            return cls(features, arrays["coef"].astype(np.float64), float(arrays["intercept"]))
        except ModelFileError as exc:
            raise ModelFileError(f"{path}: {exc}") from None


def train(records: Iterable[LabelledRecord], features: Features | None = None) -> ExtractionClassifier:
    records = list(records)
    labels = np.array([r.label for r in records])
    if set(labels.tolist()) != {0, 1}:
        raise ValueError("training needs both legitimate (0) and extraction (1) records")
    features = features or Features()
    untrained = ExtractionClassifier(features, np.zeros(2 * features.n_features), 0.0)
    model = LogisticRegression(C=REGULARIZATION_C, solver="liblinear", class_weight="balanced", random_state=0)
    model.fit(untrained.transform([r.text for r in records]), labels)
    return ExtractionClassifier(features, model.coef_[0].copy(), float(model.intercept_[0]))


def evaluate(
    clf: ExtractionClassifier, records: Sequence[LabelledRecord], threshold: float = DEFAULT_THRESHOLD
) -> dict[str, float]:
    """Precision, recall, F1 and false-positive rate at `threshold`, ROC AUC, and counts. A metric that
    is undefined on `records` (no positives, no negatives, nothing flagged) is NaN."""
    if not records:
        raise ValueError("nothing to evaluate")
    labels = np.array([r.label for r in records])
    scores = clf.score([r.text for r in records])
    flagged = scores >= threshold
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, flagged.astype(int), average="binary", zero_division=np.nan
    )
    negatives = int((labels == 0).sum())
    both_classes = 0 < negatives < len(labels)
    return {
        "n": len(labels),
        "positives": len(labels) - negatives,
        "threshold": threshold,
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "false_positive_rate": float(flagged[labels == 0].mean()) if negatives else float("nan"),
        "flagged_rate": float(flagged.mean()),
        "auc": float(roc_auc_score(labels, scores)) if both_classes else float("nan"),
    }


def default_model_path() -> Path:
    home = os.environ.get("HYDRAGUARD_HOME")
    base = Path(home) if home else Path.home() / ".cache" / "hydraguard"
    return base / "models" / "reasoning-classifier.npz"


def load_or_none(path: Path | str | None = None) -> ExtractionClassifier | None:
    """The trained model at `path` (default: `default_model_path()`), or None when none has been trained."""
    target = Path(path) if path is not None else default_model_path()
    return ExtractionClassifier.load(target) if target.is_file() else None
