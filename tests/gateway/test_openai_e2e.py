"""The official `openai` SDK against the gateway gets exactly what it gets from the upstream directly."""

from __future__ import annotations

import re

import httpx
import msgspec
import openai
import pytest


def _sse_payloads(raw: bytes) -> list[object]:
    return [
        msgspec.json.decode(line[6:]) if line != b"data: [DONE]" else "[DONE]"
        for line in raw.split(b"\n")
        if line.startswith(b"data: ")
    ]


@pytest.fixture
def clients(gateway, upstream):
    _, key = gateway.account(tier="standard")
    via_gateway = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    direct = openai.OpenAI(base_url=upstream[0].url + "/v1", api_key="unused", max_retries=0)
    return via_gateway, direct, key


MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name three colours."}]


def test_chat_completion_is_unchanged(clients):
    via_gateway, direct, _ = clients
    got = via_gateway.chat.completions.create(model="mock-small", messages=MESSAGES, max_tokens=8)
    want = direct.chat.completions.create(model="mock-small", messages=MESSAGES, max_tokens=8)
    assert got.model_dump() == want.model_dump()
    assert got.usage.completion_tokens == 8


def test_chat_stream_chunks_are_unchanged(clients):
    via_gateway, direct, _ = clients
    got = [
        c.model_dump() for c in via_gateway.chat.completions.create(model="mock-small", messages=MESSAGES, stream=True)
    ]
    want = [c.model_dump() for c in direct.chat.completions.create(model="mock-small", messages=MESSAGES, stream=True)]
    assert got == want
    assert all(c["usage"] is None for c in got)


def test_stream_usage_added_for_limits_is_stripped_from_the_wire(gateway, upstream, clients):
    """The gateway asks the upstream for usage; a client that did not ask gets the upstream's plain stream."""
    _, _, key = clients
    body = {"model": "mock-small", "messages": MESSAGES, "stream": True}
    through = httpx.post(gateway.base_url + "/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})
    plain = httpx.post(upstream[0].url + "/v1/chat/completions", json=body)
    assert through.status_code == 200
    assert _sse_payloads(through.content) == _sse_payloads(plain.content)
    assert b'"usage"' not in through.content
    assert b'"include_usage":true' in upstream[1].bodies[-2]  # the gateway's request, before the plain one


def test_stream_usage_kept_when_client_asks(clients):
    via_gateway, direct, _ = clients
    kwargs = {"model": "mock-small", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    got = [c.model_dump() for c in via_gateway.chat.completions.create(**kwargs)]
    want = [c.model_dump() for c in direct.chat.completions.create(**kwargs)]
    assert got == want
    assert got[-1]["usage"]["total_tokens"] > 0


def test_completions_embeddings_models(clients):
    via_gateway, direct, _ = clients
    assert (
        via_gateway.completions.create(model="mock-small", prompt="Once upon", max_tokens=5).model_dump()
        == direct.completions.create(model="mock-small", prompt="Once upon", max_tokens=5).model_dump()
    )
    streamed = [c.model_dump() for c in via_gateway.completions.create(model="mock-small", prompt="x", stream=True)]
    assert streamed == [c.model_dump() for c in direct.completions.create(model="mock-small", prompt="x", stream=True)]
    assert (
        via_gateway.embeddings.create(model="mock-embed", input=["a", "b"]).model_dump()
        == direct.embeddings.create(model="mock-embed", input=["a", "b"]).model_dump()
    )
    assert [m.id for m in via_gateway.models.list()] == [m.id for m in direct.models.list()]


def test_responses_api(clients):
    via_gateway, direct, _ = clients
    got = via_gateway.responses.create(model="mock-small", input="Say hi", max_output_tokens=4)
    assert (
        got.model_dump()
        == direct.responses.create(model="mock-small", input="Say hi", max_output_tokens=4).model_dump()
    )
    got_events = [e.model_dump() for e in via_gateway.responses.create(model="mock-small", input="hi", stream=True)]
    want_events = [e.model_dump() for e in direct.responses.create(model="mock-small", input="hi", stream=True)]
    assert got_events == want_events
    assert got_events[-1]["type"] == "response.completed"


async def test_async_client_stream_and_not(gateway, upstream):
    _, key = gateway.account(tier="standard")
    via_gateway = openai.AsyncOpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    direct = openai.AsyncOpenAI(base_url=upstream[0].url + "/v1", api_key="unused", max_retries=0)
    got = await via_gateway.chat.completions.create(model="mock-large", messages=MESSAGES)
    want = await direct.chat.completions.create(model="mock-large", messages=MESSAGES)
    assert got.model_dump() == want.model_dump()
    got_chunks = [
        c.model_dump()
        async for c in await via_gateway.chat.completions.create(
            model="mock-large", messages=MESSAGES, stream=True, n=2
        )
    ]
    want_chunks = [
        c.model_dump()
        async for c in await direct.chat.completions.create(model="mock-large", messages=MESSAGES, stream=True, n=2)
    ]
    assert got_chunks == want_chunks
    await via_gateway.close()
    await direct.close()


def test_every_request_gets_one_event_with_usage(gateway):
    account, key = gateway.account()
    client = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    client.chat.completions.create(model="mock-small", messages=MESSAGES, max_tokens=6, temperature=0.3)
    list(client.chat.completions.create(model="mock-small", messages=MESSAGES, max_tokens=6, stream=True))
    events = [e for e in gateway.events() if e.account_id == account.id]
    assert len(events) == 2
    plain, streamed = sorted(events, key=lambda e: e.time)
    assert plain.status == 200 and plain.completion_tokens == 6 and plain.temperature == 0.3
    assert plain.message_count == 2 and plain.system_prompt_hash is not None and plain.prompt_text is None
    assert streamed.stream and streamed.completion_tokens == 6 and streamed.finish_reason == "length"
    assert streamed.upstream_latency_ms is not None and streamed.latency_ms >= streamed.upstream_latency_ms


def test_each_request_gets_its_own_request_id_matching_its_event(gateway):
    account, key = gateway.account()
    headers = {"authorization": f"Bearer {key}"}
    with httpx.Client(base_url=gateway.server.url) as http:
        ids = [http.get("/v1/models", headers=headers).headers["x-request-id"] for _ in range(20)]
    assert len(set(ids)) == 20
    assert all(re.fullmatch(r"req_[0-9a-f]{32}", i) for i in ids)
    assert sorted(e.request_id for e in gateway.events() if e.account_id == account.id) == sorted(ids)
