from __future__ import annotations

from pathlib import Path

import pytest

from hydraguard.watermark.tokenizer import ModelTokenizer


def test_long_text_is_neither_padded_nor_truncated(tokenizer: ModelTokenizer) -> None:
    # MiniLM's tokenizer.json pads and truncates to 128 tokens for model input; detection must see every token
    assert tokenizer.encode("river " * 500).tolist() == [tokenizer.encode("river").item()] * 500
    assert len(tokenizer.encode("a short text")) == 3


def test_no_special_tokens_are_added(tokenizer: ModelTokenizer) -> None:
    ids = tokenizer.encode("hello world")
    assert tokenizer.decode(ids) == "hello world"
    assert not set(ids.tolist()) & {101, 102}  # [CLS], [SEP]


def test_a_missing_or_malformed_tokenizer_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        ModelTokenizer(tmp_path / "nope.json")
    malformed = tmp_path / "tokenizer.json"
    malformed.write_text("{}")
    with pytest.raises(ValueError, match=r"is not a tokenizer\.json"):
        ModelTokenizer(malformed)
