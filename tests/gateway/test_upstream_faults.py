"""When the upstream fails, is slow, or the client walks away: clear OpenAI-format errors, limits given back."""

from __future__ import annotations

import time

import httpx
import pytest

from hydraguard.testing.servers import free_port
from tests.closing_server import IdleClosingServer
from tests.gateway.helpers import assert_openai_error, chat_body, held_stream, one_event, post_chat, wait_for

# one concurrent request and a token budget that fits only one reservation of max_tokens=600 at a time
TIGHT = {"tight": {"account": {"concurrency": 1, "tpm": 1_000}}}


def test_upstream_down(start_gateway):
    gw = start_gateway(server={"upstream": f"http://127.0.0.1:{free_port()}/v1"}, tiers=TIGHT)
    _, key = gw.account(tier="tight")
    started = time.monotonic()
    responses = [post_chat(gw, key, chat_body(max_tokens=600)) for _ in range(3)]
    assert time.monotonic() - started < 5
    for response in responses:
        # the slot and the 600-token reservation were given back each time: never a 429
        error = assert_openai_error(response, 502, code="upstream_unavailable", type="server_error")
        assert "unreachable" in error["message"]
        event = one_event(gw, response)
        assert event.refusal_reason == "upstream_unavailable" and event.status == 502
        assert event.prompt_tokens is None
    assert len(gw.events()) == 3


def test_upstream_slower_than_the_timeout(start_gateway, upstream):
    gw = start_gateway(server={"upstream_timeout": 0.5}, tiers=TIGHT)
    _, key = gw.account(tier="tight")
    before = upstream[1].requests["/v1/chat/completions"]
    started = time.monotonic()
    response = post_chat(gw, key, chat_body("slow-2", max_tokens=600))
    elapsed = time.monotonic() - started
    error = assert_openai_error(response, 504, code="upstream_timeout", type="server_error")
    assert "in time" in error["message"]
    assert 0.4 < elapsed < 1.8, elapsed  # promptly after the timeout, not when the upstream answers
    assert upstream[1].requests["/v1/chat/completions"] == before + 1  # it was forwarded
    event = one_event(gw, response)
    assert event.refusal_reason == "upstream_timeout" and event.status == 504 and event.model == "slow-2"
    # slot and tokens given back: a normal request of the same size goes straight through
    following = post_chat(gw, key, chat_body(max_tokens=600))
    assert following.status_code == 200, following.text


def test_streaming_upstream_slower_than_the_timeout(start_gateway):
    """The timeout covers the whole answer: a stream that runs past it is cut off, the slot freed."""
    gw = start_gateway(server={"upstream_timeout": 0.5}, tiers=TIGHT)
    account, key = gw.account(tier="tight")
    started = time.monotonic()
    response = post_chat(gw, key, chat_body("slowstream-0.2", stream=True, max_tokens=600))
    assert time.monotonic() - started < 2.0
    assert response.status_code == 200  # the headers were sent before the stream broke off
    assert b"[DONE]" not in response.content
    event = wait_for(lambda: [e for e in gw.events() if e.account_id == account.id])[0]
    assert event.refusal_reason == "upstream_stream_broken"
    # the slot is free; the usage never came, so the 600-token reservation stays charged
    assert post_chat(gw, key, chat_body(max_tokens=100)).status_code == 200
    assert_openai_error(post_chat(gw, key, chat_body(max_tokens=600)), 429, type="tokens")


def test_upstream_500_is_a_502(start_gateway, upstream):
    gw = start_gateway(tiers=TIGHT)
    _, key = gw.account(tier="tight")
    response = post_chat(gw, key, chat_body("error-500", max_tokens=600))
    error = assert_openai_error(response, 502, code="upstream_error", type="server_error")
    assert "HTTP 500" in error["message"]
    assert "upstream exploded" not in response.text  # the upstream's own error is not leaked
    assert response.headers["x-ratelimit-limit-tokens"] == "1000"
    event = one_event(gw, response)
    assert event.refusal_reason == "upstream_error" and event.status == 502
    for _ in range(2):  # the reservation was refunded, the slot freed
        assert post_chat(gw, key, chat_body(max_tokens=600)).status_code == 200


@pytest.mark.parametrize("path", ["/chat/completions", "/embeddings", "/responses"])
def test_upstream_400_is_passed_through(start_gateway, upstream, path):
    gw = start_gateway(tiers=TIGHT)
    _, key = gw.account(tier="tight")
    body = {"model": "error-400", "messages": [{"role": "user", "content": "x"}], "input": "x"}
    body |= {"max_tokens": 600, "max_output_tokens": 600}
    direct = httpx.post(upstream[0].url + "/v1" + path, json=body, timeout=10)
    assert direct.status_code == 400
    response = post_chat(gw, key, body, path=path)
    assert response.status_code == 400
    assert response.content == direct.content
    assert response.json()["error"]["message"] == "bad model input"
    assert response.headers["content-type"] == direct.headers["content-type"]
    event = one_event(gw, response)
    assert event.refusal_reason == "upstream_status_400" and event.status == 400
    assert post_chat(gw, key, chat_body(max_tokens=600)).status_code == 200  # tokens refunded, slot freed


def test_client_disconnects_mid_stream(start_gateway, upstream):
    gw = start_gateway(tiers=TIGHT)
    account, key = gw.account(tier="tight")
    counting = upstream[1]
    cut_before = counting.cut_short
    with held_stream(gw, key, "slowstream-0.2", 12) as (first, _):
        assert first.startswith(b"data: ")
        started = time.monotonic()
    # closing the response closed the connection: the gateway cancels the upstream's generation
    wait_for(lambda: counting.cut_short > cut_before, timeout=2.0)
    assert time.monotonic() - started < 2.0  # well before the 12 x 0.2 s stream would have ended
    events = wait_for(lambda: [e for e in gw.events() if e.account_id == account.id])
    assert len(events) == 1
    (event,) = events
    assert event.refusal_reason == "client_disconnected"
    assert event.stream is True and event.status == 200
    assert event.completion_tokens is None  # the usage chunk never came
    # the concurrency slot was released: with concurrency=1 the next request is served
    following = post_chat(gw, key, chat_body(max_tokens=12))
    assert following.status_code == 200, following.text


def test_client_disconnects_while_the_upstream_is_silent(start_gateway, upstream):
    """The gateway notices a disconnect even while waiting on a slow upstream chunk (no write fails)."""
    gw = start_gateway(tiers=TIGHT)
    account, key = gw.account(tier="tight")
    counting = upstream[1]
    cut_before = counting.cut_short
    with held_stream(gw, key, "slowstream-5", 3):  # after the role chunk; the next word is 5 s away
        time.sleep(0.2)
        assert counting.cut_short == cut_before  # still going
    wait_for(lambda: counting.cut_short > cut_before, timeout=2.0)
    (event,) = wait_for(lambda: [e for e in gw.events() if e.account_id == account.id], timeout=2.0)
    assert event.refusal_reason == "client_disconnected"
    assert post_chat(gw, key, chat_body(max_tokens=3)).status_code == 200


def test_an_idle_upstream_connection_is_dropped_before_the_upstream_closes_it(start_gateway):
    """A model server on uvicorn (vLLM, ...) closes a connection idle for 5 s; a request sent on it as it closes is
    lost. The gateway stops reusing idle connections sooner (`upstream_keepalive`), so it never loses that race."""
    with IdleClosingServer(idle_s=0.6) as upstream:
        reusing = start_gateway(server={"upstream": upstream.url + "/v1", "upstream_keepalive": 30.0})
        dropping = start_gateway(server={"upstream": upstream.url + "/v1", "upstream_keepalive": 0.3})
        responses = {}
        for name, gw in (("reusing", reusing), ("dropping", dropping)):
            _, key = gw.account()
            assert post_chat(gw, key).status_code == 200
            time.sleep(0.8)
            responses[name] = post_chat(gw, key)
        # the race is real: a gateway that keeps connections longer than the upstream does loses a request to it
        assert_openai_error(responses["reusing"], 502, code="upstream_unavailable")
        assert responses["dropping"].status_code == 200, responses["dropping"].text
        assert responses["dropping"].json()["choices"][0]["message"]["content"] == "Red, green and blue."
        assert upstream.dropped == 1 and upstream.answered == 3
