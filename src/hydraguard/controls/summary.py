"""Reasoning summaries, written by a configurable model behind the same upstream, at bounded cost:
the trace is cut to a maximum length and the summary to a maximum number of tokens."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import msgspec

from hydraguard.config import ReasoningConfig
from hydraguard.controls.trace import split_think

SUMMARY_MARK = "[summary] "

# posts a non-streaming chat completion body to the upstream; the answer's bytes, or None on failure
Complete = Callable[[bytes], Awaitable[bytes | None]]


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message


class _Answer(msgspec.Struct):
    choices: list[_Choice]


_answer = msgspec.json.Decoder(_Answer)


class Summarizer:
    def __init__(self, config: ReasoningConfig, complete: Complete) -> None:
        self._model = config.summarizer_model
        self._max_tokens = config.summary_max_tokens
        self._max_input = config.summary_max_input_chars
        self._prompt = config.summary_prompt
        self._complete = complete

    def request(self, trace: str, model: str) -> bytes:
        """The summarizer's request; `model` (the request's own) writes it unless one is configured."""
        return msgspec.json.encode(
            {
                "model": self._model or model,
                "messages": [
                    {"role": "system", "content": self._prompt},
                    {"role": "user", "content": trace[: self._max_input]},
                ],
                "max_tokens": self._max_tokens,
                "stream": False,
            }
        )

    async def summarize(self, trace: str, model: str) -> str | None:
        """The marked summary, or None when the summarizer failed (the caller then strips the trace)."""
        data = await self._complete(self.request(trace, model))
        if data is None:
            return None
        answer = None
        with contextlib.suppress(msgspec.DecodeError, UnicodeDecodeError):
            answer = _answer.decode(data)
        if answer is None or not answer.choices or not answer.choices[0].message.content:
            return None
        text = answer.choices[0].message.content
        if (split := split_think(text)) is not None:  # a reasoning summarizer's own trace is not the summary
            text = split[1]
        return SUMMARY_MARK + text.strip() if text.strip() else None
