"""Validation and description of the OpenAI-compatible request bodies the gateway forwards.

The gateway forwards the client's bytes unchanged; these types only validate what it must read
(model, sampling parameters, prompt size) and tolerate every other field. `describe` turns a body
into a `RequestInfo`: what limits reserve and what the request's event records.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

# Counts are bounded so that they (and max_tokens x n) fit the event log's int64 columns and the
# limiter's arithmetic; JSON integers are otherwise unbounded.
MAX_COUNT = 2**31 - 1
PositiveInt = Annotated[int, msgspec.Meta(ge=1, le=MAX_COUNT)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]
Temperature = Annotated[float, msgspec.Meta(ge=0, le=2)]
Probability = Annotated[float, msgspec.Meta(ge=0, le=1)]

# Tokens are estimated at 4 characters each (OpenAI's rule of thumb for English) plus a small
# per-message overhead; the reservation is reconciled with the upstream's reported usage after.
CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4


class InvalidRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class ContentPart(msgspec.Struct):
    type: str
    text: str | None = None


class Message(msgspec.Struct):
    role: str
    content: str | list[ContentPart] | None = None


class StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class ResponseFormat(msgspec.Struct):
    type: str


class Sampling(msgspec.Struct, kw_only=True):
    model: str
    stream: bool | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    n: PositiveInt | None = None
    max_tokens: PositiveInt | None = None
    tools: list[dict[str, Any]] | None = None
    response_format: ResponseFormat | None = None


class ChatCompletionRequest(Sampling, kw_only=True):
    messages: list[Message]
    max_completion_tokens: PositiveInt | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None
    stream_options: StreamOptions | None = None


class CompletionRequest(Sampling, kw_only=True):
    prompt: str | list[Any]
    logprobs: Annotated[int, msgspec.Meta(ge=0, le=5)] | None = None
    stream_options: StreamOptions | None = None


class EmbeddingRequest(msgspec.Struct, kw_only=True):
    model: str
    input: str | list[Any]


class ResponsesRequest(msgspec.Struct, kw_only=True):
    model: str
    input: str | list[Any] | None = None
    instructions: str | None = None
    stream: bool | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    max_output_tokens: PositiveInt | None = None
    tools: list[dict[str, Any]] | None = None
    top_logprobs: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None


@dataclass(slots=True)
class RequestInfo:
    model: str
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    n: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools_count: int = 0
    tools_schema_hash: str | None = None
    response_format: str | None = None
    message_count: int = 0
    prompt_chars: int = 0
    prompt_tokens_est: int = 0
    system_prompt_hash: str | None = None
    prompt_text: str = ""
    # what the detection layer fingerprints (off the request path): the system prompt and the newest user turn
    system_text: str = ""
    user_text: str = ""
    reserve_completion_tokens: int = 0  # completion tokens the limits reserve (max_tokens x n)
    wants_usage_in_stream: bool = False  # the client itself asked for stream_options.include_usage
    supports_stream_usage: bool = False  # the endpoint streams usage only when asked (chat, completions)

    @property
    def reserved_tokens(self) -> int:
        return self.prompt_tokens_est + self.reserve_completion_tokens


def short_hash(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return hashlib.sha256(data).hexdigest()[:16]


def _estimate(chars: int, messages: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS * messages


def _text_of(content: str | list[ContentPart] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part.text for part in content if part.text)


def _tools(tools: list[dict[str, Any]] | None) -> tuple[int, str | None]:
    if not tools:
        return 0, None
    return len(tools), short_hash(msgspec.json.encode(tools, order="sorted"))


def _prompt_items(value: str | list[Any], param: str) -> tuple[list[str], int]:
    """Texts and token-id count of a `prompt`/`input` that may be a string, strings, ids or id lists."""
    if isinstance(value, str):
        return [value], 0
    texts: list[str] = []
    token_ids = 0
    for i, item in enumerate(value):
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            token_ids += 1
        elif isinstance(item, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in item):
            token_ids += len(item)
        else:
            raise InvalidRequest(f"`{param}[{i}]` must be a string, a token id or a list of token ids", param)
    return texts, token_ids


def _response_input_texts(value: str | list[Any] | None) -> tuple[list[str], int]:
    if value is None:
        return [], 0
    if isinstance(value, str):
        return [value], 1
    texts: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidRequest(f"`input[{i}]` must be an object", "input")
        content = item.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return texts, len(value)


def _decode(body: bytes, kind: type[msgspec.Struct]) -> Any:
    try:
        return msgspec.json.decode(body, type=kind)
    except UnicodeDecodeError as exc:
        raise InvalidRequest("The request body is not valid UTF-8.") from exc
    except msgspec.ValidationError as exc:
        text = str(exc)
        param = text.split("at `$.", 1)[1].rstrip("`").split(".")[0].split("[")[0] if "at `$." in text else None
        if param is None and "missing required field" in text:
            param = text.rsplit("`", 2)[-2]
        raise InvalidRequest(f"Invalid request body: {text}", param) from exc
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"We could not parse the JSON body of your request: {exc}") from exc


def describe_chat(body: bytes, default_max_tokens: int) -> RequestInfo:
    req: ChatCompletionRequest = _decode(body, ChatCompletionRequest)
    if not req.messages:
        raise InvalidRequest("`messages` must contain at least one message.", "messages")
    texts = [_text_of(m.content) for m in req.messages]
    system = [t for m, t in zip(req.messages, texts, strict=True) if m.role in ("system", "developer")]
    chars = sum(len(t) for t in texts)
    max_tokens = req.max_completion_tokens or req.max_tokens
    count, tools_hash = _tools(req.tools)
    return RequestInfo(
        model=req.model,
        stream=bool(req.stream),
        temperature=req.temperature,
        top_p=req.top_p,
        max_tokens=max_tokens,
        n=req.n,
        logprobs=req.logprobs,
        top_logprobs=req.top_logprobs,
        tools_count=count,
        tools_schema_hash=tools_hash,
        response_format=req.response_format.type if req.response_format else None,
        message_count=len(req.messages),
        prompt_chars=chars,
        prompt_tokens_est=_estimate(chars, len(req.messages)),
        system_prompt_hash=short_hash("\n".join(system)) if system else None,
        prompt_text="\n".join(texts),
        system_text="\n".join(system),
        user_text=next(
            (t for m, t in zip(reversed(req.messages), reversed(texts), strict=True) if m.role == "user"), ""
        ),
        reserve_completion_tokens=(max_tokens or default_max_tokens) * (req.n or 1),
        wants_usage_in_stream=bool(req.stream_options and req.stream_options.include_usage),
        supports_stream_usage=True,
    )


def describe_completion(body: bytes, default_max_tokens: int) -> RequestInfo:
    req: CompletionRequest = _decode(body, CompletionRequest)
    texts, token_ids = _prompt_items(req.prompt, "prompt")
    chars = sum(len(t) for t in texts)
    # the completions API's own default max_tokens is 16
    max_tokens = req.max_tokens or 16
    count, tools_hash = _tools(req.tools)
    return RequestInfo(
        model=req.model,
        stream=bool(req.stream),
        temperature=req.temperature,
        top_p=req.top_p,
        max_tokens=req.max_tokens,
        n=req.n,
        logprobs=req.logprobs is not None,
        top_logprobs=req.logprobs,
        tools_count=count,
        tools_schema_hash=tools_hash,
        message_count=max(len(texts), 1),
        prompt_chars=chars,
        prompt_tokens_est=_estimate(chars, 0) + token_ids,
        prompt_text="\n".join(texts),
        user_text="\n".join(texts),
        reserve_completion_tokens=max_tokens * (req.n or 1),
        wants_usage_in_stream=bool(req.stream_options and req.stream_options.include_usage),
        supports_stream_usage=True,
    )


def describe_embedding(body: bytes, default_max_tokens: int) -> RequestInfo:
    req: EmbeddingRequest = _decode(body, EmbeddingRequest)
    texts, token_ids = _prompt_items(req.input, "input")
    chars = sum(len(t) for t in texts)
    return RequestInfo(
        model=req.model,
        message_count=max(len(texts), 1),
        prompt_chars=chars,
        prompt_tokens_est=_estimate(chars, 0) + token_ids,
    )


def describe_response(body: bytes, default_max_tokens: int) -> RequestInfo:
    req: ResponsesRequest = _decode(body, ResponsesRequest)
    texts, messages = _response_input_texts(req.input)
    newest = texts[-1] if texts else ""
    if req.instructions:
        texts.insert(0, req.instructions)
    chars = sum(len(t) for t in texts)
    count, tools_hash = _tools(req.tools)
    return RequestInfo(
        model=req.model,
        stream=bool(req.stream),
        temperature=req.temperature,
        top_p=req.top_p,
        max_tokens=req.max_output_tokens,
        top_logprobs=req.top_logprobs,
        tools_count=count,
        tools_schema_hash=tools_hash,
        message_count=messages,
        prompt_chars=chars,
        prompt_tokens_est=_estimate(chars, messages),
        system_prompt_hash=short_hash(req.instructions) if req.instructions else None,
        prompt_text="\n".join(texts),
        system_text=req.instructions or "",
        user_text=newest,
        reserve_completion_tokens=req.max_output_tokens or default_max_tokens,
    )
