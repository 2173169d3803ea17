"""Thin adapters from the numpy processor to generation libraries' logits-processor interfaces.

None of them imports its library at module import time; torch is imported on the first call. The green list is
computed in numpy on the CPU and the bias copied to the logits' device: simple and exact, but a step costs a
(batch x vocabulary) host-to-device copy, which a GPU-native green list would avoid (see docs/watermark.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hydraguard.watermark.processor import WatermarkProcessor


class LlamaCppWatermark:
    """For `llama_cpp.LogitsProcessorList`: `(input_ids, scores) -> scores`, numpy in and out.

    llama-cpp-python passes every id so far (prompt included) and the next-token logits as 1-D arrays.
    """

    def __init__(self, processor: WatermarkProcessor) -> None:
        self.processor = processor

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        return self.processor.apply(input_ids, scores)


def _biased(processor: WatermarkProcessor, ids: np.ndarray, scores: Any) -> Any:
    import torch

    bias = processor.bias(ids, scores.shape[-1])
    return scores + torch.from_numpy(bias).to(device=scores.device, dtype=scores.dtype)


class HuggingFaceWatermark:
    """For `transformers` `generate(logits_processor=LogitsProcessorList([...]))`.

    `input_ids` is the (batch, length) LongTensor of prompt plus generated ids, `scores` the (batch, vocab) logits.
    """

    def __init__(self, processor: WatermarkProcessor) -> None:
        self.processor = processor

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        return _biased(self.processor, input_ids.detach().cpu().numpy(), scores)


class VllmWatermark:
    """For vLLM's per-request `SamplingParams(logits_processors=[...])`: `(token_ids, logits) -> logits`.

    vLLM passes only the ids generated so far, so the first `context_width` generated tokens are not
    watermarked; detection from the output text cannot score them either.
    """

    def __init__(self, processor: WatermarkProcessor) -> None:
        self.processor = processor

    def __call__(self, token_ids: list[int], logits: Any) -> Any:
        ids = np.asarray(token_ids, dtype=np.int64).reshape(1, -1)
        return _biased(self.processor, ids, logits[None, :])[0]
