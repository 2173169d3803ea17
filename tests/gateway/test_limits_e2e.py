"""Limits end to end: rpm, tpm with reservation and reconciliation, concurrency, every scope, overrides,
and all-or-nothing charging, as seen by a client (status, error body, x-ratelimit-* headers)."""

from __future__ import annotations

import asyncio
import re
import time

import httpx

from hydraguard.limits.policy import LimitSet
from tests.gateway.helpers import assert_openai_error, chat_body, held_stream, one_event, post_chat, wait_for

DURATION = re.compile(r"^(\d+ms|(\d+h)?(\d+m)?\d+s)$")
NO_IP_LIMITS = {"ip": {"rpm": None, "tpm": None, "concurrency": None}}


def _tier(**account) -> dict:
    return {"t": {"account": account}}


def _refill(tpm: int, seconds: float) -> int:
    """Tokens a `tpm` bucket refills in `seconds` (a bound for comparisons across requests), plus rounding."""
    return int(tpm * seconds / 60) + 2


def _timed_posts(gw, key, bodies):
    """Responses and the wall-clock span they took."""
    started = time.monotonic()
    responses = [post_chat(gw, key, body) for body in bodies]
    return responses, time.monotonic() - started


def _ratelimit(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("x-ratelimit-")}


# -- rpm ---------------------------------------------------------------------------------------------------------
TPM = 600


def test_rpm_limit_and_headers(start_gateway, upstream):
    # a small tpm refills slowly (10 tokens/s) next to what a request keeps (~20): the ordering below holds even
    # when a loaded machine spaces the requests seconds apart
    gw = start_gateway(tiers=_tier(rpm=3, tpm=TPM))
    _, key = gw.account(tier="t")
    before = upstream[1].total
    served = [post_chat(gw, key, chat_body(max_tokens=5)) for _ in range(3)]
    remaining_tokens = []
    for i, response in enumerate(served):
        assert response.status_code == 200, response.text
        headers = _ratelimit(response)
        assert set(headers) == {
            f"x-ratelimit-{what}-{kind}" for what in ("limit", "remaining", "reset") for kind in ("requests", "tokens")
        }
        assert headers["x-ratelimit-limit-requests"] == "3"
        assert headers["x-ratelimit-remaining-requests"] == str(2 - i)
        assert headers["x-ratelimit-limit-tokens"] == str(TPM)
        assert DURATION.match(headers["x-ratelimit-reset-requests"]), headers
        assert DURATION.match(headers["x-ratelimit-reset-tokens"]), headers
        remaining_tokens.append(int(headers["x-ratelimit-remaining-tokens"]))
    reserved = one_event(gw, served[0]).prompt_tokens_est + 5
    assert 0 < remaining_tokens[0] <= TPM - reserved
    assert remaining_tokens[0] >= TPM - reserved - 1
    assert remaining_tokens[2] < remaining_tokens[1] < remaining_tokens[0]
    # reset: a full rpm bucket refills at 20 s per request
    assert served[0].headers["x-ratelimit-reset-requests"] in ("19s", "20s")
    assert served[2].headers["x-ratelimit-reset-requests"] in ("59s", "1m0s")

    refused = post_chat(gw, key, chat_body(max_tokens=5))
    error = assert_openai_error(refused, 429, code="rate_limit_exceeded", type="requests")
    assert "Rate limit reached for rpm on account" in error["message"]
    assert "Limit 3" in error["message"]
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 20
    assert refused.headers["x-ratelimit-limit-requests"] == "3"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert DURATION.match(refused.headers["x-ratelimit-reset-requests"])
    assert upstream[1].total == before + 3
    event = one_event(gw, refused)
    assert event.refusal_reason == "rate_limited:rpm:account" and event.status == 429
    assert len(gw.events()) == 4


# -- tpm: reservation and reconciliation -------------------------------------------------------------------------
def test_tpm_reservation_is_reconciled_with_usage(start_gateway):
    """A reservation of ~610 tokens fits a 1000-tpm budget once; reconciled to the ~20 used, many fit."""
    gw = start_gateway(tiers=_tier(tpm=1_000))
    _, key = gw.account(tier="t")
    responses, took = _timed_posts(gw, key, [chat_body(max_tokens=600)] * 5)
    assert [r.status_code for r in responses] == [200] * 5
    used = [r.json()["usage"]["total_tokens"] for r in responses]
    assert all(u < 50 for u in used)
    remaining = [int(r.headers["x-ratelimit-remaining-tokens"]) for r in responses]
    reserved = one_event(gw, responses[0]).prompt_tokens_est + 600
    assert 1_000 - reserved - 1 <= remaining[0] <= 1_000 - reserved
    for i in range(1, 5):
        # the previous request was charged what it used, not what it reserved (plus a little refill)
        expected = remaining[i - 1] - used[i - 1]
        assert expected <= remaining[i] <= expected + _refill(1_000, took), (remaining, used)
    events = [one_event(gw, r) for r in responses]
    assert [e.prompt_tokens + e.completion_tokens for e in events] == used


def test_tpm_without_reconciliation_would_refuse(start_gateway):
    """Control for the test above: a second reservation does not fit while the first is outstanding."""
    gw = start_gateway(tiers=_tier(tpm=1_000, concurrency=5))
    _, key = gw.account(tier="t")
    with held_stream(gw, key, "slowstream-0.3", 600):
        refused = post_chat(gw, key, chat_body(max_tokens=600))
        error = assert_openai_error(refused, 429, code="rate_limit_exceeded", type="tokens")
        assert "Rate limit reached for tpm on account" in error["message"]
        assert one_event(gw, refused).refusal_reason == "rate_limited:tpm:account"


def test_streaming_usage_is_reconciled(start_gateway):
    gw = start_gateway(tiers=_tier(tpm=1_000))
    account, key = gw.account(tier="t")
    remaining = []
    responses, took = _timed_posts(gw, key, [chat_body(stream=True, max_tokens=600)] * 4)
    for response in responses:
        assert response.status_code == 200, response.text
        assert response.content.endswith(b"data: [DONE]\n\n")
        assert b'"usage"' not in response.content  # asked for on the client's behalf, then stripped
        remaining.append(int(response.headers["x-ratelimit-remaining-tokens"]))
    events = sorted((e for e in gw.events() if e.account_id == account.id), key=lambda e: e.time)
    assert len(events) == 4
    used = [e.prompt_tokens + e.completion_tokens for e in events]
    assert all(e.completion_tokens == 12 and e.refusal_reason is None for e in events)
    for i in range(1, 4):
        expected = remaining[i - 1] - used[i - 1]
        assert expected <= remaining[i] <= expected + _refill(1_000, took), (remaining, used)


def test_request_larger_than_the_limit_outright(start_gateway, upstream):
    gw = start_gateway(tiers=_tier(tpm=1_000))
    _, key = gw.account(tier="t")
    before = upstream[1].total
    refused = post_chat(gw, key, chat_body(max_tokens=2_000))
    error = assert_openai_error(refused, 429, code="rate_limit_exceeded", type="tokens")
    assert "Request too large for tpm on account" in error["message"]
    assert "Limit 1000" in error["message"]
    reserved = one_event(gw, refused).prompt_tokens_est + 2_000
    assert f"Requested {reserved}" in error["message"]
    assert int(refused.headers["retry-after"]) >= 3600  # retrying will never help
    assert upstream[1].total == before
    # the refusal charged nothing: a request that fits is served
    assert post_chat(gw, key, chat_body(max_tokens=900)).status_code == 200


def test_default_max_tokens_is_reserved(start_gateway):
    """Without max_tokens the configured default is reserved, so it alone can exceed a small budget."""
    gw = start_gateway(tiers=_tier(tpm=1_000), server={"default_max_tokens": 2_000})
    _, key = gw.account(tier="t")
    assert_openai_error(post_chat(gw, key, chat_body()), 429, type="tokens")
    assert post_chat(gw, key, chat_body(max_tokens=100)).status_code == 200


# -- concurrency ---------------------------------------------------------------------------------------------------
def test_concurrency_limit(start_gateway, upstream):
    gw = start_gateway(tiers=_tier(concurrency=1))
    _, key = gw.account(tier="t")
    with held_stream(gw, key, "slowstream-0.3", 12):
        before = upstream[1].total
        refused = post_chat(gw, key, chat_body(max_tokens=5))
        error = assert_openai_error(refused, 429, code="rate_limit_exceeded", type="requests")
        assert "concurrent requests" in error["message"]
        assert refused.headers["retry-after"] == "1"
        assert upstream[1].total == before
        assert one_event(gw, refused).refusal_reason == "rate_limited:concurrency:account"
    # the held stream was abandoned; its slot comes back
    wait_for(lambda: post_chat(gw, key, chat_body(max_tokens=5)).status_code == 200, timeout=3.0, interval=0.05)


def test_concurrency_slot_released_after_a_complete_stream(start_gateway):
    gw = start_gateway(tiers=_tier(concurrency=1))
    _, key = gw.account(tier="t")
    for _ in range(3):
        response = post_chat(gw, key, chat_body(stream=True, max_tokens=3))
        assert response.status_code == 200
        assert response.content.endswith(b"data: [DONE]\n\n")


# -- scopes ----------------------------------------------------------------------------------------------------------
def test_key_scope(start_gateway):
    gw = start_gateway(tiers={"t": {"key": {"rpm": 2}, "account": {"rpm": 100}}})
    account, key1 = gw.account(tier="t")
    _, key2 = gw.gateway.registry.issue_key(account.id)
    assert [post_chat(gw, key1).status_code for _ in range(2)] == [200, 200]
    refused = post_chat(gw, key1)
    assert_openai_error(refused, 429, type="requests")
    assert one_event(gw, refused).refusal_reason == "rate_limited:rpm:key"
    assert refused.headers["x-ratelimit-limit-requests"] == "2"
    # the account's other key has its own budget
    assert [post_chat(gw, key2).status_code for _ in range(2)] == [200, 200]


def test_org_scope_is_shared_by_its_accounts(start_gateway):
    gw = start_gateway(tiers={"t": {"account": {"rpm": 100}, "org": {"rpm": 3}}})
    org = gw.gateway.registry.create_org("shared", "t")
    (_, key1), (_, key2) = gw.account(tier="t", org=org.id), gw.account(tier="t", org=org.id)
    _, outsider = gw.account(tier="t")  # in an org of its own
    assert [post_chat(gw, k).status_code for k in (key1, key2, key1)] == [200, 200, 200]
    for key in (key1, key2):
        refused = post_chat(gw, key)
        assert_openai_error(refused, 429, code="rate_limit_exceeded")
        assert one_event(gw, refused).refusal_reason == "rate_limited:rpm:org"
    assert post_chat(gw, outsider).status_code == 200


def test_ip_scope(start_gateway):
    gw = start_gateway(limits={"ip": {"rpm": 2}}, tiers=_tier(rpm=100))
    (_, key1), (_, key2) = gw.account(tier="t"), gw.account(tier="t")
    assert post_chat(gw, key1).status_code == 200
    assert post_chat(gw, key2).status_code == 200
    refused = post_chat(gw, key1)
    assert_openai_error(refused, 429, code="rate_limit_exceeded")
    event = one_event(gw, refused)
    assert event.refusal_reason == "rate_limited:rpm:ip" and event.client_ip == "127.0.0.1"


def test_ip_scope_follows_trusted_forwarded_for(start_gateway):
    gw = start_gateway(limits={"ip": {"rpm": 1}}, tiers=_tier(rpm=100), server={"trusted_proxies": ["127.0.0.1/32"]})
    _, key = gw.account(tier="t")
    assert post_chat(gw, key, headers={"x-forwarded-for": "10.0.0.1"}).status_code == 200
    refused = post_chat(gw, key, headers={"x-forwarded-for": "10.0.0.1"})
    assert_openai_error(refused, 429)
    assert one_event(gw, refused).client_ip == "10.0.0.1"
    assert post_chat(gw, key, headers={"x-forwarded-for": "10.0.0.2"}).status_code == 200


def test_forwarded_for_from_an_untrusted_peer_is_ignored(start_gateway):
    """Without trusted proxies a client cannot dodge its IP limit by claiming other addresses."""
    gw = start_gateway(limits={"ip": {"rpm": 1}}, tiers=_tier(rpm=100))
    _, key = gw.account(tier="t")
    assert post_chat(gw, key, headers={"x-forwarded-for": "10.0.0.1"}).status_code == 200
    refused = post_chat(gw, key, headers={"x-forwarded-for": "10.0.0.2"})
    assert_openai_error(refused, 429, code="rate_limit_exceeded")
    event = one_event(gw, refused)
    assert event.refusal_reason == "rate_limited:rpm:ip" and event.client_ip == "127.0.0.1"


def test_forwarded_for_takes_the_nearest_untrusted_hop(start_gateway):
    """A client behind a trusted proxy cannot spoof by prepending addresses to X-Forwarded-For."""
    gw = start_gateway(limits={"ip": {"rpm": 1}}, tiers=_tier(rpm=100), server={"trusted_proxies": ["127.0.0.0/8"]})
    _, key = gw.account(tier="t")
    first = post_chat(gw, key, headers={"x-forwarded-for": "6.6.6.6, 10.0.0.7"})
    assert first.status_code == 200
    assert one_event(gw, first).client_ip == "10.0.0.7"
    refused = post_chat(gw, key, headers={"x-forwarded-for": "7.7.7.7, 10.0.0.7"})
    assert_openai_error(refused, 429, code="rate_limit_exceeded")
    assert one_event(gw, refused).client_ip == "10.0.0.7"


def test_group_scope_is_shared_by_its_accounts(start_gateway):
    gw = start_gateway(limits={"group": {"rpm": 3}, **NO_IP_LIMITS}, tiers=_tier(rpm=100))
    (a, key_a), (b, key_b), (_, key_c) = (gw.account(tier="t") for _ in range(3))
    asyncio.run(gw.gateway.decisions.set_group("grp_test", [a.id, b.id]))
    assert gw.gateway.decisions.groups_of(a.id) == {"grp_test"}
    assert [post_chat(gw, k).status_code for k in (key_a, key_b, key_a)] == [200, 200, 200]
    for key in (key_a, key_b):
        refused = post_chat(gw, key)
        assert_openai_error(refused, 429, code="rate_limit_exceeded")
        assert one_event(gw, refused).refusal_reason == "rate_limited:rpm:group"
    assert post_chat(gw, key_c).status_code == 200  # not in the group
    # leaving the group frees an account from the group's budget
    asyncio.run(gw.gateway.decisions.set_group("grp_test", [a.id]))
    assert post_chat(gw, key_b).status_code == 200
    assert post_chat(gw, key_a).status_code == 429


def test_per_account_override(start_gateway):
    gw = start_gateway(tiers=_tier(rpm=100))
    (a, key_a), (_, key_b) = gw.account(tier="t"), gw.account(tier="t")
    assert post_chat(gw, key_a).status_code == 200  # cached principal: the override must still apply
    gw.gateway.registry.update_account(a.id, limit_overrides=LimitSet(rpm=1))
    refused = post_chat(gw, key_a)
    assert_openai_error(refused, 429, type="requests")
    assert refused.headers["x-ratelimit-limit-requests"] == "1"
    assert one_event(gw, refused).refusal_reason == "rate_limited:rpm:account"
    assert [post_chat(gw, key_b).status_code for _ in range(3)] == [200] * 3  # the tier is unchanged
    # clearing the override restores the tier's limit
    gw.gateway.registry.update_account(a.id, clear_overrides=True)
    assert post_chat(gw, key_a).status_code == 200


def test_override_can_raise_a_limit(start_gateway):
    gw = start_gateway(tiers=_tier(rpm=1))
    account, key = gw.account(tier="t")
    gw.gateway.registry.update_account(account.id, limit_overrides=LimitSet(rpm=5))
    assert [post_chat(gw, key).status_code for _ in range(5)] == [200] * 5
    assert post_chat(gw, key).status_code == 429


# -- all or nothing ----------------------------------------------------------------------------------------------------
def test_a_refusal_by_one_scope_charges_no_other(start_gateway, upstream):
    """The IP scope refuses after the account scope admitted: the account is not charged for it."""
    gw = start_gateway(
        limits={"ip": {"rpm": 1}}, tiers=_tier(rpm=2, tpm=1_000), server={"trusted_proxies": ["127.0.0.1/32"]}
    )
    _, key = gw.account(tier="t")

    def from_ip(ip: str) -> httpx.Response:
        return post_chat(gw, key, chat_body(max_tokens=400), headers={"x-forwarded-for": ip})

    started = time.monotonic()
    first = from_ip("10.0.0.1")
    assert first.status_code == 200
    tokens_after_first = int(first.headers["x-ratelimit-remaining-tokens"])
    # refused by the IP's rpm; neither the account's rpm nor its tpm is charged
    refusals = [from_ip("10.0.0.1") for _ in range(5)]
    second = from_ip("10.0.0.2")
    took = time.monotonic() - started
    for refused in refusals:
        assert_openai_error(refused, 429)
        assert one_event(gw, refused).refusal_reason == "rate_limited:rpm:ip"
    assert second.status_code == 200, second.text  # the account still had its second request
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    used_first = first.json()["usage"]["total_tokens"]
    expected = tokens_after_first - used_first  # 5 x 400 more had the refusals been charged
    assert expected <= int(second.headers["x-ratelimit-remaining-tokens"]) <= expected + _refill(1_000, took)
    third = from_ip("10.0.0.3")
    assert_openai_error(third, 429)
    assert one_event(gw, third).refusal_reason == "rate_limited:rpm:account"


def test_a_refused_request_frees_nothing_it_did_not_take(start_gateway):
    """A concurrency refusal does not charge the rpm budget either."""
    gw = start_gateway(tiers=_tier(rpm=2, concurrency=1))
    _, key = gw.account(tier="t")
    with held_stream(gw, key, "slowstream-0.5", 8) as (_, chunks):  # 4 s: the refusals below fit in it
        for _ in range(3):
            refused = post_chat(gw, key)
            assert one_event(gw, refused).refusal_reason == "rate_limited:concurrency:account"
        assert b"[DONE]" in b"".join(chunks)  # let the stream finish normally
    response = post_chat(gw, key)
    assert response.status_code == 200, response.text  # rpm: 1 of 2 used before, now 2
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
