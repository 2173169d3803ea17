"""A small deterministic OpenAI-compatible model server for tests, demos and benchmarks.

It answers like the OpenAI API does, including the streaming details the gateway depends on:
with `stream_options.include_usage`, every chunk carries `"usage": null` and a last chunk with
empty `choices` carries the usage. Content is derived from a hash of the request, so the same
request always gets the same bytes. Models named `error-500`, `error-400`, `slow-<seconds>` and
`slowstream-<seconds>` misbehave on purpose for fault tests. Chat models named `...-reasoning-field`
answer with a reasoning trace in `reasoning_content` (vLLM, DeepSeek); `...-reasoning-think` inline
in the content as `<think>...</think>`, with the tags split across stream chunks.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

CREATED = 1_767_225_600  # fixed so that answers are byte-identical between runs
WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliett",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
]
MODELS = ("mock-small", "mock-large", "mock-embed", "mock-reasoning-field", "mock-reasoning-think")
REASONING_WORDS = 6


def _json(data: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(data), status_code=status, media_type="application/json")


def _digest(body: bytes) -> int:
    return int.from_bytes(hashlib.sha256(body).digest()[:8], "big")


def _seed(body: dict[str, Any]) -> int:
    """Streaming or not, with usage or not: the same request gets the same content."""
    content = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    return _digest(msgspec.json.encode(content, order="sorted"))


def _words(seed: int, count: int) -> list[str]:
    return [WORDS[((seed >> (i % 48)) + i) % len(WORDS)] for i in range(count)]


def _prompt_tokens(body: dict[str, Any]) -> int:
    text = msgspec.json.encode(body.get("messages") or body.get("prompt") or body.get("input") or "")
    return max(1, math.ceil(len(text) / 4))


async def _misbehave(model: str) -> Response | None:
    if model == "error-500":
        return _json(
            {"error": {"message": "upstream exploded", "type": "server_error", "param": None, "code": None}},
            500,
        )
    if model == "error-400":
        return _json(
            {
                "error": {
                    "message": "bad model input",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
            400,
        )
    if model.startswith("slow-"):
        await asyncio.sleep(float(model.removeprefix("slow-")))
    return None


def _completion_length(body: dict[str, Any], default: int) -> int:
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or body.get("max_output_tokens")
    return min(int(limit or default), 12)


def _reasoning_pieces(model: str, seed: int) -> tuple[str | None, list[str]]:
    """The reasoning style the model name selects ("field", "think" or None) and its trace, in the
    pieces a stream sends."""
    style = "field" if model.endswith("-reasoning-field") else "think" if model.endswith("-reasoning-think") else None
    if style is None:
        return None, []
    steps = _words(seed ^ 0x5EED, REASONING_WORDS)
    return style, ["Let me think:", *(" " + step for step in steps), " so that is settled."]


def _reasoning_deltas(style: str | None, trace: list[str]) -> list[dict[str, str]]:
    if style == "field":
        return [{"reasoning_content": piece} for piece in trace]
    if style == "think":  # the tags split across chunks, as token-by-token streams split them
        return [{"content": piece} for piece in ["<thi", "nk>", *trace, "</th", "ink>\n\n"]]
    return []


def _sse(data: Any) -> bytes:
    return b"data: " + msgspec.json.encode(data) + b"\n\n"


async def chat_completions(request: Request) -> Response:
    raw = await request.body()
    body = msgspec.json.decode(raw)
    model = body.get("model", "")
    if (bad := await _misbehave(model)) is not None:
        return bad
    seed = _seed(body)
    words = _words(seed, _completion_length(body, 12))
    style, trace = _reasoning_pieces(model, seed)
    n = int(body.get("n") or 1)
    cid = f"chatcmpl-{seed:016x}"
    usage = {
        "prompt_tokens": _prompt_tokens(body),
        "completion_tokens": (len(words) + len(trace)) * n,
        "total_tokens": _prompt_tokens(body) + (len(words) + len(trace)) * n,
    }
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": " ".join(words), "refusal": None}
        if style == "field":
            message["reasoning_content"] = "".join(trace)
        elif style == "think":
            message["content"] = "<think>" + "".join(trace) + "</think>\n\n" + message["content"]
        choices = [{"index": i, "message": message, "logprobs": None, "finish_reason": "length"} for i in range(n)]
        return _json(
            {
                "id": cid,
                "object": "chat.completion",
                "created": CREATED,
                "model": model,
                "choices": choices,
                "usage": usage,
                "system_fingerprint": "fp_mock",
            }
        )
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    delay = float(model.removeprefix("slowstream-")) if model.startswith("slowstream-") else 0.0

    async def events() -> AsyncIterator[bytes]:
        base = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "system_fingerprint": "fp_mock",
        }
        extra = {"usage": None} if include_usage else {}
        for i in range(n):
            yield _sse(
                {
                    **base,
                    "choices": [
                        {
                            "index": i,
                            "delta": {"role": "assistant", "content": ""},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ],
                    **extra,
                }
            )
            for delta in _reasoning_deltas(style, trace):
                yield _sse(
                    {
                        **base,
                        "choices": [{"index": i, "delta": delta, "logprobs": None, "finish_reason": None}],
                        **extra,
                    }
                )
            for j, word in enumerate(words):
                if delay:
                    await asyncio.sleep(delay)
                yield _sse(
                    {
                        **base,
                        "choices": [
                            {
                                "index": i,
                                "delta": {"content": (" " if j else "") + word},
                                "logprobs": None,
                                "finish_reason": None,
                            }
                        ],
                        **extra,
                    }
                )
            yield _sse(
                {
                    **base,
                    "choices": [{"index": i, "delta": {}, "logprobs": None, "finish_reason": "length"}],
                    **extra,
                }
            )
        if include_usage:
            yield _sse({**base, "choices": [], "usage": usage})
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def completions(request: Request) -> Response:
    raw = await request.body()
    body = msgspec.json.decode(raw)
    model = body.get("model", "")
    if (bad := await _misbehave(model)) is not None:
        return bad
    seed = _seed(body)
    words = _words(seed, _completion_length(body, 16))
    usage = {
        "prompt_tokens": _prompt_tokens(body),
        "completion_tokens": len(words),
        "total_tokens": _prompt_tokens(body) + len(words),
    }
    cid = f"cmpl-{seed:016x}"
    if not body.get("stream"):
        return _json(
            {
                "id": cid,
                "object": "text_completion",
                "created": CREATED,
                "model": model,
                "choices": [{"index": 0, "text": " ".join(words), "logprobs": None, "finish_reason": "length"}],
                "usage": usage,
            }
        )
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    async def events() -> AsyncIterator[bytes]:
        base = {"id": cid, "object": "text_completion", "created": CREATED, "model": model}
        extra = {"usage": None} if include_usage else {}
        for j, word in enumerate(words):
            finish = "length" if j == len(words) - 1 else None
            yield _sse(
                {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "text": (" " if j else "") + word,
                            "logprobs": None,
                            "finish_reason": finish,
                        }
                    ],
                    **extra,
                }
            )
        if include_usage:
            yield _sse({**base, "choices": [], "usage": usage})
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def embeddings(request: Request) -> Response:
    raw = await request.body()
    body = msgspec.json.decode(raw)
    if (bad := await _misbehave(body.get("model", ""))) is not None:
        return bad
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    data = []
    for i, item in enumerate(inputs):
        seed = _digest(msgspec.json.encode(item))
        data.append(
            {
                "object": "embedding",
                "index": i,
                "embedding": [((seed >> k) % 1000) / 1000.0 for k in range(8)],
            }
        )
    tokens = _prompt_tokens(body)
    return _json(
        {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


async def responses(request: Request) -> Response:
    raw = await request.body()
    body = msgspec.json.decode(raw)
    model = body.get("model", "")
    if (bad := await _misbehave(model)) is not None:
        return bad
    seed = _seed(body)
    words = _words(seed, _completion_length(body, 12))
    text = " ".join(words)
    rid = f"resp_{seed:016x}"
    usage = {
        "input_tokens": _prompt_tokens(body),
        "output_tokens": len(words),
        "total_tokens": _prompt_tokens(body) + len(words),
    }
    message = {
        "type": "message",
        "id": f"msg_{seed:016x}",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    final = {
        "id": rid,
        "object": "response",
        "created_at": CREATED,
        "status": "completed",
        "model": model,
        "output": [message],
        "usage": usage,
    }
    if not body.get("stream"):
        return _json(final)

    async def events() -> AsyncIterator[bytes]:
        seq = 0

        def event(kind: str, payload: dict[str, Any]) -> bytes:
            nonlocal seq
            seq += 1
            data = {"type": kind, "sequence_number": seq, **payload}
            return f"event: {kind}\n".encode() + _sse(data)

        yield event("response.created", {"response": {**final, "status": "in_progress", "output": [], "usage": None}})
        for j, word in enumerate(words):
            yield event(
                "response.output_text.delta",
                {
                    "item_id": message["id"],
                    "output_index": 0,
                    "content_index": 0,
                    "delta": (" " if j else "") + word,
                },
            )
        yield event("response.completed", {"response": final})

    return StreamingResponse(events(), media_type="text/event-stream")


async def models(request: Request) -> Response:
    return _json(
        {
            "object": "list",
            "data": [{"id": m, "object": "model", "created": CREATED, "owned_by": "mock"} for m in MODELS],
        }
    )


def create_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/responses", responses, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
        ]
    )


app = create_app()
