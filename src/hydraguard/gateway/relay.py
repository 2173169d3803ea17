"""Relaying the upstream's answer: usage accounting, and SSE streams passed through chunk by chunk."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

import anyio
import msgspec
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

TokenCount = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]


class Usage(msgspec.Struct):
    prompt_tokens: TokenCount | None = None
    completion_tokens: TokenCount | None = None
    input_tokens: TokenCount | None = None  # the Responses API's names
    output_tokens: TokenCount | None = None


class Choice(msgspec.Struct):
    finish_reason: str | None = None


class Answer(msgspec.Struct):
    """The parts of an upstream JSON answer (or one stream chunk) that the gateway reads."""

    usage: Usage | None = None
    choices: list[Choice] | None = None
    response: Answer | None = None  # Responses API stream events wrap the response
    status: str | None = None


_answer_decoder = msgspec.json.Decoder(Answer)
_FINISH = re.compile(rb'"finish_reason"\s*:\s*"([A-Za-z_]+)"')


@dataclass(slots=True)
class Accounting:
    """Token usage and finish reason, as the upstream reported them."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None

    def read(self, answer: Answer) -> None:
        if answer.response is not None:
            self.read(answer.response)
        usage = answer.usage
        if usage is not None:
            prompt = usage.prompt_tokens if usage.prompt_tokens is not None else usage.input_tokens
            completion = usage.completion_tokens if usage.completion_tokens is not None else usage.output_tokens
            if prompt is not None:
                self.prompt_tokens = prompt
            if completion is not None:
                self.completion_tokens = completion
        if answer.choices:
            reason = answer.choices[0].finish_reason
            if reason:
                self.finish_reason = reason
        elif answer.status:
            self.finish_reason = answer.status

    def read_body(self, body: bytes) -> None:
        with contextlib.suppress(msgspec.DecodeError, UnicodeDecodeError):
            self.read(_answer_decoder.decode(body))

    @property
    def total(self) -> int | None:
        if self.prompt_tokens is None and self.completion_tokens is None:
            return None
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)


def _data_of(event: bytes) -> bytes | None:
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            return line[5:].strip()
    return None


def _without_usage(event: bytes, data: bytes) -> bytes | None:
    """The event without the usage the gateway asked for on the client's behalf: `None` drops the
    usage-only last chunk, other chunks lose their `"usage": null`."""
    try:
        chunk: dict[str, Any] = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return event
    if not isinstance(chunk, dict) or "usage" not in chunk:
        return event
    if chunk.get("usage") is not None and not chunk.get("choices"):
        return None
    del chunk["usage"]
    return event.replace(data, msgspec.json.encode(chunk), 1)


# one upstream event and its data in, the events to send in its place out (the output controls)
RewriteEvent = Callable[[bytes, bytes], Awaitable[list[bytes]]]


async def relay_sse(
    chunks: AsyncIterator[bytes], accounting: Accounting, *, strip_usage: bool, rewrite: RewriteEvent | None = None
) -> AsyncIterator[bytes]:
    """Yield the upstream's SSE events as they arrive, reading usage and finish reasons on the way."""
    pending = b""
    async for chunk in chunks:
        pending += chunk
        out: list[bytes] = []
        while True:
            cut = pending.find(b"\n\n")
            if cut < 0:
                break
            event, pending = pending[: cut + 2], pending[cut + 2 :]
            data = _data_of(event)
            if data is not None and data != b"[DONE]":
                if b'"usage"' in data or b'"response' in data:
                    accounting.read_body(data)
                    if strip_usage:
                        stripped = _without_usage(event, data)
                        if stripped is None:
                            continue
                        if stripped is not event:
                            event, data = stripped, _data_of(stripped) or b""
                elif b"finish_reason" in data and (match := _FINISH.search(data)):
                    accounting.finish_reason = match.group(1).decode()
            if rewrite is not None and data is not None:
                out += await rewrite(event, data)
            else:
                out.append(event)
        if out:
            yield b"".join(out)
    if pending:
        yield pending


class RelayResponse(StreamingResponse):
    """A streaming response that notices a client's disconnect even while the upstream is silent,
    and then cancels the stream (whose cleanup cancels the upstream request)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def until_done(func: Callable[[], Awaitable[None]]) -> None:
                with contextlib.suppress(OSError):  # the client went away while we were sending
                    await func()
                group.cancel_scope.cancel()

            group.start_soon(until_done, partial(self.stream_response, send))
            await until_done(partial(self.listen_for_disconnect, receive))
