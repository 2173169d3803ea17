"""Property tests of request parsing: any input gives a `RequestInfo` or `InvalidRequest`, never another
exception, and what is described of a valid request matches the request."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hydraguard.gateway.requests import (
    CHARS_PER_TOKEN,
    MESSAGE_OVERHEAD_TOKENS,
    InvalidRequest,
    RequestInfo,
    describe_chat,
    describe_completion,
    describe_embedding,
    describe_response,
)

DESCRIBES = [describe_chat, describe_completion, describe_embedding, describe_response]
INT64_MAX = 2**63 - 1
DEFAULT_MAX_TOKENS = 4_096

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=15,
)

# objects shaped like requests, so that the decoders get past "expected an object" and into the fields
FIELDS = [
    "model",
    "messages",
    "prompt",
    "input",
    "instructions",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "n",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "logprobs",
    "top_logprobs",
    "tools",
    "response_format",
]
field_values = (
    json_values
    | st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]), "content": json_values}), max_size=3)
    | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": json_values}), max_size=3)
    | st.lists(st.lists(st.integers(min_value=-5, max_value=2**40), max_size=3) | st.integers(), max_size=3)
    | st.fixed_dictionaries({"include_usage": json_values})
)
request_like = st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=8)


def _check(describe, body: bytes) -> RequestInfo | None:
    try:
        info = describe(body, DEFAULT_MAX_TOKENS)
    except InvalidRequest as exc:
        assert isinstance(exc.message, str) and exc.message
        assert exc.param is None or isinstance(exc.param, str)
        return None
    assert isinstance(info, RequestInfo)
    assert isinstance(info.model, str)
    # everything an event records is an int64, and the reservation is non-negative and finite
    for value in (info.max_tokens, info.n, info.top_logprobs, info.message_count, info.prompt_chars):
        assert value is None or 0 <= value <= INT64_MAX
    assert 0 <= info.prompt_tokens_est <= INT64_MAX
    assert 0 <= info.reserved_tokens <= INT64_MAX
    msgspec.json.encode(info)  # plain data throughout
    return info


def _check_all(body: bytes) -> None:
    for describe in DESCRIBES:
        _check(describe, body)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=200))
def test_arbitrary_bytes(body):
    _check_all(body)


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_arbitrary_json(value):
    _check_all(msgspec.json.encode(value))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=request_like, model=st.one_of(st.none(), st.text(max_size=10)))
def test_request_shaped_json(value, model):
    if model is not None:
        value = {**value, "model": model}
    _check_all(msgspec.json.encode(value))


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(FIELDS), value=json_values | st.integers())
def test_valid_requests_with_one_arbitrary_field(field, value):
    """A valid body for every endpoint, with one field set to anything."""
    base = {"model": "m", "messages": [{"role": "user", "content": "x"}], "prompt": "x", "input": "x"}
    _check_all(msgspec.json.encode({**base, field: value}))


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=100))
def test_bytes_spliced_into_a_valid_body(body):
    """Invalid UTF-8 and control bytes inside strings of an otherwise valid body."""
    prefix = b'{"model": "m", "messages": [{"role": "user", "content": "'
    _check_all(prefix + body.replace(b'"', b"").replace(b"\\", b"") + b'"}], "prompt": "x", "input": "x"}')


def test_a_huge_max_tokens_is_invalid_not_overflowing():
    """JSON integers are unbounded; counts the event log stores as int64 must be refused, not passed on."""
    body = b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 18446744073709551616}'
    with pytest.raises(InvalidRequest) as caught:
        describe_chat(body, DEFAULT_MAX_TOKENS)
    assert caught.value.param == "max_tokens"
    with pytest.raises(InvalidRequest):
        describe_chat(body.replace(b'"max_tokens"', b'"n"'), DEFAULT_MAX_TOKENS)
    with pytest.raises(InvalidRequest):
        describe_response(b'{"model": "m", "input": "x", "max_output_tokens": 9223372036854775808}', DEFAULT_MAX_TOKENS)


# -- valid chat requests ----------------------------------------------------------------------------------------
text = st.text(max_size=60)
content = text | st.lists(
    st.fixed_dictionaries({"type": st.just("text"), "text": text})
    | st.fixed_dictionaries({"type": st.just("image_url")}),
    max_size=3,
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant"]), "content": content}
)
chat_request = st.fixed_dictionaries(
    {"model": st.text(min_size=1, max_size=20), "messages": st.lists(message, min_size=1, max_size=6)},
    optional={
        "max_tokens": st.integers(min_value=1, max_value=100_000),
        "max_completion_tokens": st.integers(min_value=1, max_value=100_000),
        "n": st.integers(min_value=1, max_value=8),
        "temperature": st.floats(min_value=0, max_value=2),
        "top_p": st.floats(min_value=0, max_value=1),
        "stream": st.booleans(),
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
        "tools": st.lists(st.fixed_dictionaries({"type": st.just("function"), "name": text}), max_size=3),
        "unknown_field": json_values,  # tolerated and ignored
    },
)


def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(p["text"] for p in content if p.get("text"))


@settings(max_examples=300, deadline=None)
@given(request=chat_request)
def test_valid_chat_requests_are_described_consistently(request):
    info = describe_chat(msgspec.json.encode(request), DEFAULT_MAX_TOKENS)
    messages = request["messages"]
    texts = [_text_of(m["content"]) for m in messages]
    chars = sum(len(t) for t in texts)
    assert info.model == request["model"]
    assert info.message_count == len(messages)
    assert info.prompt_chars == chars
    assert info.prompt_tokens_est == math.ceil(chars / CHARS_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS * len(messages)
    assert info.prompt_text == "\n".join(texts)
    max_tokens = request.get("max_completion_tokens") or request.get("max_tokens")
    assert info.max_tokens == max_tokens
    assert info.n == request.get("n")
    completion = (max_tokens or DEFAULT_MAX_TOKENS) * request.get("n", 1)
    assert info.reserved_tokens == info.prompt_tokens_est + completion
    assert info.reserved_tokens >= info.prompt_chars / CHARS_PER_TOKEN
    assert info.stream is bool(request.get("stream"))
    assert info.wants_usage_in_stream is bool(request.get("stream_options", {}).get("include_usage"))
    assert info.tools_count == len(request.get("tools", []))
    assert (info.tools_schema_hash is None) == (not request.get("tools"))
    has_system = any(m["role"] in ("system", "developer") for m in messages)
    assert (info.system_prompt_hash is not None) == has_system


@settings(max_examples=100, deadline=None)
@given(request=chat_request, extra=st.text(min_size=1, max_size=40))
def test_longer_prompts_reserve_more(request, extra):
    """Appending text to a message never lowers the estimate (limits cannot be dodged by adding)."""
    longer = {**request, "messages": [*request["messages"], {"role": "user", "content": extra}]}
    a = describe_chat(msgspec.json.encode(request), DEFAULT_MAX_TOKENS)
    b = describe_chat(msgspec.json.encode(longer), DEFAULT_MAX_TOKENS)
    assert b.prompt_tokens_est > a.prompt_tokens_est
    assert b.reserved_tokens > a.reserved_tokens


@settings(max_examples=200, deadline=None)
@given(
    prompt=st.one_of(
        st.text(max_size=50),
        st.lists(st.text(max_size=20), max_size=4),
        st.lists(st.integers(min_value=0, max_value=50_000), max_size=10),
        st.lists(st.lists(st.integers(min_value=0, max_value=50_000), max_size=5), max_size=3),
    ),
    max_tokens=st.none() | st.integers(min_value=1, max_value=10_000),
)
def test_completion_prompts_of_every_shape(prompt, max_tokens):
    body = {"model": "m", "prompt": prompt}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    info = describe_completion(msgspec.json.encode(body), DEFAULT_MAX_TOKENS)
    if isinstance(prompt, str):
        texts, ids = [prompt], 0
    else:
        texts = [p for p in prompt if isinstance(p, str)]
        ids = sum(1 if isinstance(p, int) else len(p) for p in prompt if not isinstance(p, str))
    chars = sum(len(t) for t in texts)
    assert info.prompt_chars == chars
    assert info.prompt_tokens_est == math.ceil(chars / CHARS_PER_TOKEN) + ids
    assert info.reserved_tokens == info.prompt_tokens_est + (max_tokens or 16)
