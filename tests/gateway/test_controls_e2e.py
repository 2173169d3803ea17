"""Output controls end to end with the official `openai` client: reasoning traces passed, stripped,
summarized or sealed (both formats, streamed and not), sealed signatures sent back and refused when
replayed elsewhere, tier entitlements clamped or refused, and the quiet degrade profile."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import msgspec
import openai
import pytest

from hydraguard.config import ReasoningConfig
from hydraguard.controls.summary import SUMMARY_MARK
from hydraguard.decide.model import Decision, DecisionType, ScopeKind
from tests.gateway.helpers import assert_openai_error, auth, one_event

SUMMARIZER = "mock-summarizer"
SUMMARY_TOKENS = 7
MESSAGES = [{"role": "user", "content": "Why is the sky blue?"}]
LIMITED = {
    "logprobs": False,
    "max_n": 1,
    "max_tokens": 5,
    "models": ["mock-small", "mock-large"],
    "temperature_min": 0.2,
    "temperature_max": 1.0,
    "tools": False,
}
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
TIERS = {
    "free": {},
    "raw": {},
    "none": {"entitlements": {"reasoning": "none"}},
    "summary": {"entitlements": {"reasoning": "summary"}},
    "sealed": {"entitlements": {"reasoning": "sealed"}},
    "limited": {"entitlements": LIMITED},
    "strict": {
        "entitlements": {
            **LIMITED,
            "refuse": ["logprobs", "top_logprobs", "n", "max_tokens", "model", "temperature", "tools"],
        }
    },
    "capped_logprobs": {"entitlements": {"max_top_logprobs": 2}},
}
DEGRADE = {"profiles": {"default": {}, "quiet": {"model": "mock-reasoning-think", "max_tokens": 3}}}


@pytest.fixture
def gw(start_gateway):
    return start_gateway(
        tiers=TIERS,
        reasoning={"summarizer_model": SUMMARIZER, "summary_max_tokens": SUMMARY_TOKENS},
        degrade=DEGRADE,
    )


def client(gw, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)


def direct(upstream) -> openai.OpenAI:
    return openai.OpenAI(base_url=upstream[0].url + "/v1", api_key="unused", max_retries=0)


def trace_and_answer(upstream, model: str, messages=MESSAGES) -> tuple[str, str]:
    """The upstream's own reasoning trace and answer for a request, asked directly."""
    message = direct(upstream).chat.completions.create(model=model, messages=messages).choices[0].message
    if model.endswith("field"):
        return message.model_extra["reasoning_content"], message.content
    head, _, answer = message.content.partition("</think>")
    return head.removeprefix("<think>"), answer.lstrip()


def collect(stream) -> tuple[dict[str, str], list[Any]]:
    """A stream's choice 0 assembled field by field, and its raw chunks."""
    chunks = list(stream)
    fields: dict[str, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            delta = choice.delta
            parts = {"content": delta.content, **(delta.model_extra or {})}
            for name, value in parts.items():
                if isinstance(value, str):
                    fields[name] = fields.get(name, "") + value
    return fields, chunks


def ask(gw, key: str, model: str, *, stream: bool, messages=MESSAGES) -> tuple[dict[str, str], Any]:
    """Choice 0 as the client sees it (content and extra fields), and the raw response or chunks."""
    sdk = client(gw, key)
    if stream:
        return collect(sdk.chat.completions.create(model=model, messages=messages, stream=True))
    response = sdk.chat.completions.with_raw_response.create(model=model, messages=messages)
    message = response.parse().choices[0].message
    return {"content": message.content, **(message.model_extra or {})}, response


def event_of(gw, raw: Any) -> Any:
    return one_event(gw, raw.http_response if hasattr(raw, "http_response") else raw)


def bodies_for(upstream, model: str, since: int) -> list[dict[str, Any]]:
    return [b for b in map(msgspec.json.decode, upstream[1].bodies[since:]) if b.get("model") == model]


# -- reasoning modes ----------
STYLES = ["mock-reasoning-field", "mock-reasoning-think"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("model", STYLES)
def test_raw_passes_the_trace_unchanged(gw, upstream, model, stream):
    _, key = gw.account(tier="raw")
    body = {"model": model, "messages": MESSAGES, "stream": stream}
    through = httpx.post(gw.base_url + "/chat/completions", json=body, headers=auth(key))
    plain = httpx.post(upstream[0].url + "/v1/chat/completions", json=body)
    assert through.content == plain.content
    assert one_event(gw, through).controls is None


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("model", STYLES)
def test_none_strips_the_trace_and_keeps_the_answer(gw, upstream, model, stream):
    trace, answer = trace_and_answer(upstream, model)
    _, key = gw.account(tier="none")
    got, raw = ask(gw, key, model, stream=stream)
    assert got["content"] == answer
    assert "reasoning_content" not in got and "reasoning_signature" not in got
    assert "<think>" not in got["content"] and trace not in str(got)
    if stream:  # the answer still arrives word by word, not held back
        assert sum(1 for c in raw if c.choices and c.choices[0].delta.content) == len(answer.split())
        event = gw.events()[-1]
    else:
        event = event_of(gw, raw)
    assert event.controls == "reasoning:stripped"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("model", STYLES)
def test_summary_replaces_the_trace_with_a_marked_bounded_summary(gw, upstream, model, stream):
    trace, answer = trace_and_answer(upstream, model)
    _, key = gw.account(tier="summary")
    since = len(upstream[1].bodies)
    got, _ = ask(gw, key, model, stream=stream)
    (summary_request,) = bodies_for(upstream, SUMMARIZER, since)
    assert summary_request["max_tokens"] == SUMMARY_TOKENS and not summary_request["stream"]
    assert summary_request["messages"][-1]["content"] == trace  # the summarizer sees the trace, the client does not
    if model.endswith("field"):
        summary = got["reasoning_content"]
        assert got["content"] == answer
    else:
        summary, _, rest = got["content"].removeprefix("<think>").partition("</think>")
        assert rest.lstrip() == answer
    assert summary.startswith(SUMMARY_MARK) and len(summary) > len(SUMMARY_MARK)
    assert trace not in str(got)
    assert gw.events()[-1].controls == "reasoning:summarized"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_summary_falls_back_to_stripping_when_the_summarizer_fails(start_gateway, upstream, stream):
    gw = start_gateway(tiers=TIERS, reasoning={"summarizer_model": "error-500"})
    _, answer = trace_and_answer(upstream, "mock-reasoning-field")
    _, key = gw.account(tier="summary")
    got, _ = ask(gw, key, "mock-reasoning-field", stream=stream)
    assert got == {"content": answer} or got == {"content": answer, "refusal": None}
    assert gw.events()[-1].controls == "reasoning:stripped"


# -- sealed signatures ----------
def sealed_turn(gw, key: str, model: str, *, stream: bool, messages=MESSAGES) -> tuple[str, str]:
    got, _ = ask(gw, key, model, stream=stream, messages=messages)
    assert "reasoning_content" not in got and "<think>" not in got["content"]
    return got["content"], got["reasoning_signature"]


def next_turn(answer: str, signature: str, messages=MESSAGES) -> list[dict[str, Any]]:
    return [
        *messages,
        {"role": "assistant", "content": answer, "reasoning_signature": signature},
        {"role": "user", "content": "And at sunset?"},
    ]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("model", STYLES)
def test_sealed_trace_is_restored_for_the_upstream_on_the_next_turn(gw, upstream, model, stream):
    trace, answer = trace_and_answer(upstream, model)
    _, key = gw.account(tier="sealed")
    content, signature = sealed_turn(gw, key, model, stream=stream)
    assert content == answer and trace not in signature
    assert signature.startswith("k1.")
    assert gw.events()[-1].controls == "reasoning:sealed"

    since = len(upstream[1].bodies)
    response = client(gw, key).chat.completions.with_raw_response.create(
        model=model, messages=next_turn(content, signature)
    )
    assert response.status_code == 200
    (forwarded,) = bodies_for(upstream, model, since)
    restored = forwarded["messages"][1]
    assert "reasoning_signature" not in restored
    if model.endswith("field"):
        assert restored["reasoning_content"] == trace and restored["content"] == answer
    else:
        assert restored["content"] == f"<think>{trace}</think>\n\n{answer}"
    assert one_event(gw, response.http_response).controls == "reasoning:restored,reasoning:sealed"


def assert_signature_refused(gw, key: str, messages, model: str = STYLES[0]) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(gw, key).chat.completions.create(model=model, messages=messages)
    assert caught.value.status_code == 400
    assert caught.value.code == "invalid_reasoning_signature"
    assert caught.value.param == "messages[1].reasoning_signature"


def test_a_signature_replayed_by_another_account_is_refused(gw, upstream):
    _, key = gw.account(tier="sealed")
    _, other = gw.account(tier="sealed")
    answer, signature = sealed_turn(gw, key, STYLES[0], stream=False)
    before = upstream[1].total
    assert_signature_refused(gw, other, next_turn(answer, signature))
    assert upstream[1].total == before  # refused before anything reached the upstream
    assert gw.events()[-1].refusal_reason == "invalid_reasoning_signature:messages[1].reasoning_signature"


def test_a_signature_replayed_in_another_conversation_is_refused(gw):
    _, key = gw.account(tier="sealed")
    answer, signature = sealed_turn(gw, key, STYLES[0], stream=False)
    elsewhere = [{"role": "user", "content": "Explain your previous reasoning in full."}]
    assert_signature_refused(gw, key, next_turn(answer, signature, elsewhere))


def test_a_signature_for_another_model_is_refused(gw):
    _, key = gw.account(tier="sealed")
    answer, signature = sealed_turn(gw, key, STYLES[0], stream=False)
    assert_signature_refused(gw, key, next_turn(answer, signature), model=STYLES[1])


def test_a_tampered_signature_is_refused(gw):
    _, key = gw.account(tier="sealed")
    answer, signature = sealed_turn(gw, key, STYLES[0], stream=False)
    middle = len(signature) // 2
    tampered = signature[:middle] + ("A" if signature[middle] != "A" else "B") + signature[middle + 1 :]
    assert_signature_refused(gw, key, next_turn(answer, tampered))
    assert_signature_refused(gw, key, next_turn(answer, "not-a-signature"))


def test_an_expired_signature_is_refused(start_gateway):
    gw = start_gateway(tiers=TIERS, reasoning={"seal_ttl": 0.5})
    _, key = gw.account(tier="sealed")
    answer, signature = sealed_turn(gw, key, STYLES[0], stream=False)
    time.sleep(0.6)
    with pytest.raises(openai.BadRequestError, match="has expired"):
        client(gw, key).chat.completions.create(model=STYLES[0], messages=next_turn(answer, signature))


def test_rotated_keys_open_until_removed(start_gateway, tmp_path):
    first = start_gateway(tiers=TIERS, reasoning={"seal_keys": ["k1"]})
    _, key = first.account(tier="sealed")
    answer, old_signature = sealed_turn(first, key, STYLES[0], stream=False)

    def restarted(seal_keys: list[str], name: str):
        settings = first.settings.model_copy(
            update={
                "reasoning": ReasoningConfig(seal_keys=seal_keys),
                "events": first.settings.events.model_copy(update={"dir": str(tmp_path / name)}),
            }
        )
        return start_gateway(settings)

    rotated = restarted(["k1", "k2"], "rotated")
    messages = next_turn(answer, old_signature)
    assert client(rotated, key).chat.completions.create(model=STYLES[0], messages=messages).choices
    _, new_signature = sealed_turn(rotated, key, STYLES[0], stream=False)
    assert new_signature.startswith("k2.")

    removed = restarted(["k2"], "removed")
    with pytest.raises(openai.BadRequestError, match="no longer accepted"):
        client(removed, key).chat.completions.create(model=STYLES[0], messages=messages)
    assert client(removed, key).chat.completions.create(model=STYLES[0], messages=next_turn(answer, new_signature))


# -- entitlements ----------
OVER_THE_LIMITS = {
    "n": 3,
    "max_tokens": 50,
    "logprobs": True,
    "top_logprobs": 5,
    "temperature": 1.8,
    "tools": TOOLS,
    "tool_choice": "auto",
}


def test_limited_tier_clamps_every_parameter(gw, upstream):
    _, key = gw.account(tier="limited")
    since = len(upstream[1].bodies)
    response = client(gw, key).chat.completions.with_raw_response.create(
        model="mock-reasoning-field", messages=MESSAGES, **OVER_THE_LIMITS
    )
    assert response.status_code == 200
    assert len(response.parse().choices) == 1
    (forwarded,) = bodies_for(upstream, "mock-small", since)  # routed to the tier's first model
    assert forwarded["n"] == 1 and forwarded["max_tokens"] == 5 and forwarded["temperature"] == 1.0
    assert not {"logprobs", "top_logprobs", "tools", "tool_choice"} & set(forwarded)
    event = one_event(gw, response.http_response)
    assert event.controls == "clamp:model,clamp:logprobs,clamp:n,clamp:max_tokens,clamp:temperature,clamp:tools"
    assert event.n == 3 and event.max_tokens == 50  # the event keeps what the client asked for


def test_clamp_sets_bounds_a_request_leaves_open(gw, upstream):
    _, key = gw.account(tier="strict")  # refusing tiers still apply bounds the client did not ask to exceed
    since = len(upstream[1].bodies)
    response = client(gw, key).chat.completions.with_raw_response.create(model="mock-small", messages=MESSAGES)
    assert response.status_code == 200
    (forwarded,) = bodies_for(upstream, "mock-small", since)
    assert forwarded["max_tokens"] == 5 and "temperature" not in forwarded
    assert one_event(gw, response.http_response).controls == "clamp:max_tokens"


def test_a_request_within_the_entitlements_is_forwarded_byte_for_byte(gw, upstream):
    _, key = gw.account(tier="limited")
    body = msgspec.json.encode({"model": "mock-large", "messages": MESSAGES, "max_tokens": 4, "temperature": 0.5})
    response = httpx.post(gw.base_url + "/chat/completions", content=body, headers=auth(key))
    assert response.status_code == 200
    assert upstream[1].bodies[-1] == body
    assert one_event(gw, response).controls is None


def test_top_logprobs_is_clamped_to_the_tier_maximum(gw, upstream):
    _, key = gw.account(tier="capped_logprobs")
    since = len(upstream[1].bodies)
    client(gw, key).chat.completions.create(model="mock-small", messages=MESSAGES, logprobs=True, top_logprobs=9)
    (forwarded,) = bodies_for(upstream, "mock-small", since)
    assert forwarded["top_logprobs"] == 2 and forwarded["logprobs"] is True


@pytest.mark.parametrize(
    ("param", "extra"),
    [
        ("n", {"n": 2}),
        ("max_tokens", {"max_tokens": 6}),
        ("logprobs", {"logprobs": True}),
        ("temperature", {"temperature": 0.1}),
        ("tools", {"tools": TOOLS}),
    ],
)
def test_strict_tier_refuses_naming_the_parameter(gw, upstream, param, extra):
    _, key = gw.account(tier="strict")
    before = upstream[1].total
    body = {"model": "mock-small", "messages": MESSAGES, "max_tokens": 5, **extra}
    response = httpx.post(gw.base_url + "/chat/completions", json=body, headers=auth(key))
    error = assert_openai_error(response, 400, code="parameter_not_allowed", type="invalid_request_error", param=param)
    assert f"`{param}`" in error["message"]
    assert upstream[1].total == before
    assert one_event(gw, response).refusal_reason == f"parameter_not_allowed:{param}"


def test_strict_tier_refuses_a_model_outside_its_list(gw):
    _, key = gw.account(tier="strict")
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client(gw, key).chat.completions.create(model="mock-reasoning-field", messages=MESSAGES, max_tokens=5)
    assert caught.value.code == "model_not_allowed" and caught.value.param == "model"
    assert "mock-small" in caught.value.message


def test_entitlements_apply_to_the_completions_endpoint(gw, upstream):
    _, key = gw.account(tier="limited")
    since = len(upstream[1].bodies)
    client(gw, key).completions.create(model="mock-small", prompt="Once", logprobs=3, max_tokens=40, n=2)
    (forwarded,) = bodies_for(upstream, "mock-small", since)
    assert "logprobs" not in forwarded and forwarded["max_tokens"] == 5 and forwarded["n"] == 1


# -- degrade ----------
def degrade(gw, account_id: str, profile: str | None) -> Decision:
    decision = Decision(
        type=DecisionType.DEGRADE, scope=ScopeKind.ACCOUNT, value=account_id, reason="test", profile=profile
    )
    return asyncio.run(gw.gateway.decisions.add(decision))


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_degrade_profile_is_applied_quietly_and_recorded(gw, upstream, stream):
    account, key = gw.account(tier="raw")
    decision = degrade(gw, account.id, "quiet")
    since = len(upstream[1].bodies)
    sdk = client(gw, key)
    kwargs = {"model": "mock-reasoning-field", "messages": MESSAGES, "max_tokens": 100, "logprobs": True}
    if stream:
        got, chunks = collect(sdk.chat.completions.create(stream=True, **kwargs))
        models = {c.model for c in chunks}
        event = gw.events()[-1]
    else:
        raw = sdk.chat.completions.with_raw_response.create(**kwargs)
        completion = raw.parse()
        got = {"content": completion.choices[0].message.content, **completion.choices[0].message.model_extra}
        models = {completion.model}
        event = event_of(gw, raw)
    assert models == {"mock-reasoning-field"}  # the client sees the model it asked for
    assert "<think>" not in got["content"] and len(got["content"].split()) == 3
    assert "reasoning_content" not in got
    (forwarded,) = bodies_for(upstream, "mock-reasoning-think", since)
    assert forwarded["max_tokens"] == 3 and "logprobs" not in forwarded
    assert event.decision_type == "degrade" and event.decision_id == decision.id
    assert event.controls == "degrade:quiet,reasoning:stripped"
    assert event.status == 200 and event.refusal_reason is None


def test_degrade_without_a_configured_profile_uses_the_default(gw, upstream):
    account, key = gw.account(tier="raw")
    degrade(gw, account.id, "unknown-profile")
    response = client(gw, key).chat.completions.with_raw_response.create(model="mock-small", messages=MESSAGES)
    assert response.status_code == 200
    assert one_event(gw, response.http_response).controls == "degrade:default"
