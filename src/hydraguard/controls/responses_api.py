"""Reasoning in Responses API answers: output items of type `reasoning` and their stream events. Any
mode other than `raw` strips them here (summaries and seals cover chat completions only)."""

from __future__ import annotations

from typing import Any

import msgspec

from hydraguard.controls.reasoning import Record


def _is_reasoning(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type") == "reasoning"


def _strip_output(response: Any) -> bool:
    output = response.get("output") if isinstance(response, dict) else None
    if not isinstance(output, list) or not any(map(_is_reasoning, output)):
        return False
    response["output"] = [item for item in output if not _is_reasoning(item)]
    return True


class ResponsesReasoningStrip:
    def __init__(self, record: Record) -> None:
        self._record = record

    async def body(self, data: bytes) -> bytes:
        if b'"reasoning"' not in data:
            return data
        try:
            answer = msgspec.json.decode(data)
        except msgspec.DecodeError:
            return data
        if not _strip_output(answer):
            return data
        self._record("reasoning:stripped")
        return msgspec.json.encode(answer)

    async def rewrite(self, event: bytes, data: bytes) -> list[bytes]:
        if b"reasoning" not in data:
            return [event]
        try:
            payload = msgspec.json.decode(data)
        except msgspec.DecodeError:
            return [event]
        if not isinstance(payload, dict):
            return [event]
        if str(payload.get("type", "")).startswith("response.reasoning") or _is_reasoning(payload.get("item")):
            self._record("reasoning:stripped")
            return []
        if _strip_output(payload.get("response")):
            return [event.replace(data, msgspec.json.encode(payload), 1)]
        return [event]

    def stream(self) -> ResponsesReasoningStrip:
        return self
