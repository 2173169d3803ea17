"""Reasoning traces in chat completion answers, per mode: `none` strips them, `summary` puts a marked
summary in their place, `sealed` a `reasoning_signature` the client can send back. JSON answers and SSE
streams, in both trace formats. In a stream, content passes on as it arrives; only the trace is held
back, and its replacement is sent as one extra chunk when the trace ends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from hydraguard.config import ReasoningMode
from hydraguard.controls.seal import Binding, Sealer
from hydraguard.controls.summary import Summarizer
from hydraguard.controls.trace import REASONING_FIELDS, THINK_CLOSE, THINK_OPEN, ThinkScanner, Trace, take_trace

Record = Callable[[str], None]
_MAY_HOLD_REASONING = (b"reasoning", THINK_OPEN.encode())


class ReasoningControl:
    """One request's reasoning mode (not `raw`), applied to its answer."""

    def __init__(
        self,
        mode: ReasoningMode,
        *,
        model: str,
        binding: Binding | None,
        sealer: Sealer,
        summarizer: Summarizer,
        record: Record,
    ) -> None:
        self.mode = mode
        self._model = model  # the model that answered, which also summarizes unless one is configured
        self._binding = binding
        self._sealer = sealer
        self._summarizer = summarizer
        self._record = record

    async def replacement(self, trace: Trace) -> dict[str, str]:
        """The fields the client gets in place of the trace (`content` goes before the answer)."""
        if self.mode == "sealed" and self._binding is not None:
            self._record("reasoning:sealed")
            return {"reasoning_signature": self._sealer.seal(trace, self._binding)}
        if self.mode == "summary":
            summary = await self._summarizer.summarize(trace.text, self._model)
            if summary is not None:
                self._record("reasoning:summarized")
                if trace.style == "field":
                    return {trace.field: summary}
                return {"content": THINK_OPEN + summary + THINK_CLOSE + "\n\n"}
        self._record("reasoning:stripped")
        return {}

    async def body(self, data: bytes) -> bytes:
        if not any(marker in data for marker in _MAY_HOLD_REASONING):
            return data
        try:
            answer = msgspec.json.decode(data)
        except msgspec.DecodeError:
            return data
        changed = False
        for choice in answer.get("choices") or () if isinstance(answer, dict) else ():
            message = choice.get("message") if isinstance(choice, dict) else None
            if not isinstance(message, dict) or (trace := take_trace(message)) is None:
                continue
            replacement = await self.replacement(trace)
            if "content" in replacement:
                message["content"] = replacement.pop("content") + (message.get("content") or "")
            message.update(replacement)
            changed = True
        return msgspec.json.encode(answer) if changed else data

    def stream(self) -> ReasoningStream:
        return ReasoningStream(self)


class _ChoiceTrace:
    """The trace of one choice of a stream, as it arrives."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.field = REASONING_FIELDS[0]
        self.scanner = ThinkScanner()
        self.replaced = False

    def take(self, delta: dict[str, Any]) -> bool:
        """Remove the trace from the delta; whether the delta changed."""
        changed = False
        for field in REASONING_FIELDS:
            piece = delta.get(field)
            if isinstance(piece, str):
                del delta[field]
                self.pieces.append(piece)
                self.field = field
                changed = True
        content = delta.get("content")
        if isinstance(content, str) and content:
            passed = self.scanner.feed(content)
            if passed != content:
                delta["content"] = passed
                changed = True
        return changed

    def finish(self, delta: dict[str, Any]) -> bool:
        held = self.scanner.finish()
        if held:
            delta["content"] = held + (delta.get("content") or "")
        return bool(held)

    def has_trace(self) -> bool:
        return bool(self.pieces) or self.scanner.found

    def ended(self, delta: dict[str, Any]) -> bool:
        """Whether the trace is complete, with this delta (the answer or a tool call began)."""
        if self.scanner.found:
            return self.scanner.closed
        return bool(delta.get("content")) or bool(delta.get("tool_calls"))

    def trace(self) -> Trace:
        if self.pieces:
            return Trace("".join(self.pieces), "field", self.field)
        return Trace("".join(self.scanner.trace), "think")


def _emptied(choice: dict[str, Any]) -> bool:
    delta = choice["delta"]
    return choice.get("finish_reason") is None and not choice.get("logprobs") and not any(delta.values())


class ReasoningStream:
    """The control applied to a chat completion stream, event by event."""

    def __init__(self, control: ReasoningControl) -> None:
        self._control = control
        self._choices: dict[int, _ChoiceTrace] = {}
        self._envelope: dict[str, Any] = {}

    async def rewrite(self, event: bytes, data: bytes) -> list[bytes]:
        """The events to send for one upstream event."""
        if data == b"[DONE]":
            return [*await self._finish_all(), event]
        try:
            chunk = msgspec.json.decode(data)
        except msgspec.DecodeError:
            return [event]
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        if not isinstance(choices, list) or not choices:
            return [event]
        self._envelope = {k: (None if k == "usage" else v) for k, v in chunk.items() if k != "choices"}
        before: list[bytes] = []
        kept: list[Any] = []
        changed = False
        for choice in choices:
            if not isinstance(choice, dict) or not isinstance(choice.get("delta"), dict):
                kept.append(choice)
                continue
            index = choice.get("index", 0)
            state = self._choices.setdefault(index, _ChoiceTrace())
            delta = choice["delta"]
            touched = state.take(delta)
            finished = choice.get("finish_reason") is not None
            if finished:
                touched = state.finish(delta) or touched
            if state.has_trace() and not state.replaced and (finished or state.ended(delta)):
                state.replaced = True
                if replacement := await self._control.replacement(state.trace()):
                    before.append(self._chunk(index, replacement))
            changed = changed or touched
            if not (touched and _emptied(choice)):
                kept.append(choice)
        if not changed:
            return [*before, event]
        if not kept:
            return before
        chunk["choices"] = kept
        return [*before, event.replace(data, msgspec.json.encode(chunk), 1)]

    async def _finish_all(self) -> list[bytes]:
        """A stream that ended without finish reasons: the traces still open end here."""
        out = []
        for index, state in self._choices.items():
            delta: dict[str, Any] = {}
            state.finish(delta)
            if state.has_trace() and not state.replaced:
                state.replaced = True
                delta.update(await self._control.replacement(state.trace()))
            if delta:
                out.append(self._chunk(index, delta))
        return out

    def _chunk(self, index: int, delta: dict[str, Any]) -> bytes:
        chunk = {
            **self._envelope,
            "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}],
        }
        return b"data: " + msgspec.json.encode(chunk) + b"\n\n"
