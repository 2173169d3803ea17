"""Text to token ids with the generating model's own tokenizer (a Hugging Face `tokenizer.json`).

The watermark lives on the token ids the generating model sampled, so detection must re-tokenize text with that
same tokenizer; another tokenizer splits the text into different k-grams and the green counts become noise.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer


class ModelTokenizer:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        file = Path(path)
        if not file.is_file():
            raise ValueError(f"tokenizer file {file} does not exist (give the generating model's tokenizer.json)")
        try:
            self._tokenizer = Tokenizer.from_file(str(file))
        except Exception as exc:  # the Rust library raises a bare Exception for malformed files
            raise ValueError(f"{file} is not a tokenizer.json: {exc}") from exc
        # a tokenizer.json made for model input may pad or truncate (MiniLM's pads to 128): that would add
        # tokens the model never sampled and cut long texts
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()

    def encode(self, text: str) -> np.ndarray:
        # no special tokens: the model's sampled output does not contain the BOS/CLS markers added for its input
        return np.asarray(self._tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def decode(self, ids: np.ndarray | list[int]) -> str:
        return self._tokenizer.decode([int(i) for i in ids])

    def vocabulary(self) -> dict[str, int]:
        return self._tokenizer.get_vocab(with_added_tokens=False)
