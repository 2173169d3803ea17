from __future__ import annotations

import numpy as np
import pytest

from hydraguard.watermark.adapters import HuggingFaceWatermark, LlamaCppWatermark, VllmWatermark
from hydraguard.watermark.keys import WatermarkKey
from hydraguard.watermark.params import WatermarkParams
from hydraguard.watermark.processor import WatermarkProcessor


@pytest.fixture
def processor(key: WatermarkKey) -> WatermarkProcessor:
    return WatermarkProcessor(key, WatermarkParams(context_width=2, gamma=0.25, delta=2.0))


def test_llama_cpp_adapter_takes_and_returns_numpy(processor: WatermarkProcessor) -> None:
    input_ids = np.array([101, 2023, 2003], dtype=np.intc)
    scores = np.random.default_rng(0).normal(size=4_000).astype(np.single)
    biased = LlamaCppWatermark(processor)(input_ids, scores)
    assert biased.dtype == np.single
    assert biased.shape == scores.shape
    np.testing.assert_allclose(biased, processor.apply(input_ids, scores))
    assert set(np.round(biased - scores, 5)) == {0.0, 2.0}


def test_hugging_face_adapter_matches_the_numpy_core(processor: WatermarkProcessor) -> None:
    torch = pytest.importorskip("torch")
    input_ids = torch.tensor([[101, 7, 8], [101, 9, 10]])
    scores = torch.randn(2, 1_000, dtype=torch.float32)
    biased = HuggingFaceWatermark(processor)(input_ids, scores)
    assert isinstance(biased, torch.Tensor)
    assert biased.dtype == torch.float32
    np.testing.assert_allclose(biased.numpy(), processor.apply(input_ids.numpy(), scores.numpy()), rtol=1e-6)


def test_vllm_adapter_uses_the_generated_ids_as_context(processor: WatermarkProcessor) -> None:
    torch = pytest.importorskip("torch")
    logits = torch.randn(1_000, dtype=torch.float16)
    adapter = VllmWatermark(processor)
    assert torch.equal(adapter([5], logits), logits)  # shorter than the context width: untouched
    biased = adapter([5, 6, 7], logits)
    assert biased.shape == logits.shape
    assert biased.dtype == torch.float16
    expected = processor.apply(np.array([6, 7]), logits.float().numpy())
    np.testing.assert_allclose(biased.float().numpy(), expected, atol=1e-2)
