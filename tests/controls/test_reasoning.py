"""The reasoning control on chat answers: JSON bodies and SSE streams, per mode."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from hydraguard.config import ReasoningConfig
from hydraguard.controls.reasoning import ReasoningControl
from hydraguard.controls.seal import Binding, Sealer
from hydraguard.controls.summary import Summarizer

BINDING = Binding("acct", "m", "0" * 64)
SEALER = Sealer(b"secret", ["k1"], 60)


def control(mode: str, summary: bytes | None = None, record: list[str] | None = None) -> ReasoningControl:
    async def complete(body: bytes) -> bytes | None:
        return summary

    return ReasoningControl(
        mode,  # type: ignore[arg-type]
        model="m",
        binding=BINDING,
        sealer=SEALER,
        summarizer=Summarizer(ReasoningConfig(), complete),
        record=(record if record is not None else []).append,
    )


def sse(chunk: dict[str, Any]) -> bytes:
    return b"data: " + msgspec.json.encode(chunk) + b"\n\n"


def delta(index: int, finish: str | None = None, **fields: Any) -> bytes:
    return sse({"id": "c", "choices": [{"index": index, "delta": fields, "finish_reason": finish}]})


def run_stream(ctl: ReasoningControl, events: list[bytes]) -> list[dict[str, Any]]:
    stream = ctl.stream()

    async def go() -> list[bytes]:
        out: list[bytes] = []
        for event in events:
            out += await stream.rewrite(event, event[6:-2])
        return out

    return [msgspec.json.decode(e[6:-2]) if e != b"data: [DONE]\n\n" else "[DONE]" for e in asyncio.run(go())]


def assembled(chunks: list[Any], index: int) -> dict[str, str]:
    fields: dict[str, str] = {}
    for chunk in chunks:
        if chunk == "[DONE]":
            continue
        for choice in chunk["choices"]:
            if choice["index"] == index:
                for name, value in choice["delta"].items():
                    if isinstance(value, str):
                        fields[name] = fields.get(name, "") + value
    return fields


DONE = b"data: [DONE]\n\n"


def test_interleaved_choices_each_get_their_own_signature():
    events = [
        delta(0, reasoning_content="zero "),
        delta(1, content="<think>one"),
        delta(0, reasoning_content="thinks"),
        delta(1, content=" thinks</think>"),
        delta(0, content="A0"),
        delta(1, content="\nA1"),
        delta(0, "stop"),
        delta(1, "stop"),
        DONE,
    ]
    out = run_stream(control("sealed"), events)
    zero, one = assembled(out, 0), assembled(out, 1)
    assert zero["content"] == "A0" and one["content"] == "A1"
    assert SEALER.open(zero["reasoning_signature"], BINDING).text == "zero thinks"
    assert SEALER.open(one["reasoning_signature"], BINDING).text == "one thinks"
    assert out[-1] == "[DONE]"


def test_a_tool_call_ends_the_trace():
    events = [
        delta(0, reasoning_content="plan"),
        delta(0, tool_calls=[{"index": 0, "id": "t"}]),
        delta(0, "tool_calls"),
    ]
    out = run_stream(control("summary", b'{"choices":[{"message":{"content":"short"}}]}'), events)
    assert out[0]["choices"][0]["delta"] == {"reasoning_content": "[summary] short"}
    assert out[1]["choices"][0]["delta"]["tool_calls"][0]["id"] == "t"


def test_a_think_block_cut_off_by_the_token_limit_is_still_held_back():
    record: list[str] = []
    events = [delta(0, content="<think>never"), delta(0, content=" closes"), delta(0, "length"), DONE]
    out = run_stream(control("none", record=record), events)
    assert "never" not in msgspec.json.encode(out).decode()
    assert out[0]["choices"][0]["finish_reason"] == "length"
    assert record == ["reasoning:stripped"]


def test_a_stream_without_reasoning_passes_unchanged():
    events = [delta(0, role="assistant", content=""), delta(0, content="Plain"), delta(0, content=" text"), DONE]
    stream = control("sealed").stream()

    async def go() -> list[bytes]:
        return [e for event in events for e in await stream.rewrite(event, event[6:-2])]

    assert asyncio.run(go()) == events


@pytest.mark.parametrize("mode", ["none", "summary", "sealed"])
def test_json_answer_without_reasoning_is_not_rewritten(mode):
    body = b'{"choices": [{"message": {"role": "assistant", "content": "x"}}]}'
    assert asyncio.run(control(mode).body(body)) is body
