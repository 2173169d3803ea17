"""Reasoning in Responses API answers is stripped in every mode but raw, JSON and streamed."""

from __future__ import annotations

import asyncio

import msgspec

from hydraguard.controls.responses_api import ResponsesReasoningStrip

REASONING = {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "t"}]}
MESSAGE = {"type": "message", "id": "msg_1", "content": [{"type": "output_text", "text": "answer"}]}


def test_json_answer_loses_its_reasoning_items():
    record: list[str] = []
    body = msgspec.json.encode({"id": "resp", "output": [REASONING, MESSAGE]})
    out = msgspec.json.decode(asyncio.run(ResponsesReasoningStrip(record.append).body(body)))
    assert out["output"] == [MESSAGE]
    assert record == ["reasoning:stripped"]
    plain = msgspec.json.encode({"id": "resp", "output": [MESSAGE]})
    assert asyncio.run(ResponsesReasoningStrip(record.append).body(plain)) is plain


def test_stream_drops_reasoning_events_and_items():
    strip = ResponsesReasoningStrip([].append)

    def run(payload: dict) -> list[bytes]:
        data = msgspec.json.encode(payload)
        return asyncio.run(strip.rewrite(b"event: x\ndata: " + data + b"\n\n", data))

    assert run({"type": "response.reasoning_text.delta", "delta": "secret"}) == []
    assert run({"type": "response.output_item.added", "item": REASONING}) == []
    kept = run({"type": "response.output_text.delta", "delta": "answer"})
    assert len(kept) == 1 and b"answer" in kept[0]
    (completed,) = run({"type": "response.completed", "response": {"output": [REASONING, MESSAGE]}})
    assert b"reasoning_text" not in completed and completed.startswith(b"event: x\ndata: ")
