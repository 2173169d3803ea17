"""Bad requests are answered by the gateway itself: the right 4xx in OpenAI's error format, nothing
forwarded to the upstream, and exactly one event with the refusal's reason and status."""

from __future__ import annotations

import time

import httpx
import msgspec
import pytest

from hydraguard.accounts.models import AccountStatus
from tests.gateway.helpers import assert_openai_error, auth, chat_body, one_event, post_chat

GOOD_MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def gw(start_gateway):
    return start_gateway(server={"max_body_bytes": 300, "max_header_bytes": 2_000})


@pytest.fixture
def key(gw):
    return gw.account(tier="standard")[1]


def _refused(gw, upstream, response, status, reason, *, code=None, type=None, param=...):
    """Common checks: error format, and one event with the reason and status."""
    error = assert_openai_error(response, status, code=code, type=type, param=param)
    event = one_event(gw, response)
    assert event.refusal_reason == reason
    assert event.status == status
    assert len(gw.events()) == 1  # no other event either (every test here makes one request)
    return error, event


# -- bodies --------------------------------------------------------------------------------------------------
BAD_BODIES = [
    # (id, path, body bytes, param, a fragment of the message)
    ("malformed-json", "/chat/completions", b'{"model": "mock-small", "messages": [', None, "could not parse the JSON"),
    ("not-json", "/chat/completions", b"model=mock-small", None, "could not parse the JSON"),
    ("empty-body", "/chat/completions", b"", None, "could not parse the JSON"),
    ("json-array", "/chat/completions", b"[1, 2]", None, "Expected `object`"),
    (
        "model-int",
        "/chat/completions",
        b'{"model": 3, "messages": [{"role": "user", "content": "hi"}]}',
        "model",
        "`$.model`",
    ),
    (
        "temperature-str",
        "/chat/completions",
        b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}',
        "temperature",
        "`$.temperature`",
    ),
    (
        "temperature-range",
        "/chat/completions",
        b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 3}',
        "temperature",
        "`$.temperature`",
    ),
    ("messages-str", "/chat/completions", b'{"model": "m", "messages": "x"}', "messages", "`$.messages`"),
    (
        "messages-missing-role",
        "/chat/completions",
        b'{"model": "m", "messages": [{"content": "x"}]}',
        "messages",
        "role",
    ),
    ("missing-model", "/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}]}', "model", "`model`"),
    ("missing-messages", "/chat/completions", b'{"model": "mock-small"}', "messages", "`messages`"),
    ("empty-messages", "/chat/completions", b'{"model": "mock-small", "messages": []}', "messages", "at least one"),
    (
        "max-tokens-zero",
        "/chat/completions",
        b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}',
        "max_tokens",
        "`$.max_tokens`",
    ),
    (
        "max-tokens-float",
        "/chat/completions",
        b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1.5}',
        "max_tokens",
        "`$.max_tokens`",
    ),
    (
        "max-tokens-huge",
        "/chat/completions",
        b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000000000000000000}',
        "max_tokens",
        "`$.max_tokens`",
    ),
    (
        "n-negative",
        "/chat/completions",
        b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": -1}',
        "n",
        "`$.n`",
    ),
    (
        "stream-str",
        "/chat/completions",
        b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}',
        "stream",
        "`$.stream`",
    ),
    (
        "invalid-utf8",
        "/chat/completions",
        b'{"model": "m", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
        None,
        "UTF-8",
    ),
    ("completion-prompt-float", "/completions", b'{"model": "m", "prompt": [1.5]}', "prompt", "`prompt[0]`"),
    ("completion-missing-prompt", "/completions", b'{"model": "m"}', "prompt", "`prompt`"),
    ("embedding-input-int", "/embeddings", b'{"model": "m", "input": 5}', "input", "`$.input`"),
    ("embedding-input-nested", "/embeddings", b'{"model": "m", "input": [{"a": 1}]}', "input", "`input[0]`"),
    ("responses-input-items", "/responses", b'{"model": "m", "input": [1]}', "input", "`input[0]`"),
    ("responses-model-null", "/responses", b'{"model": null, "input": "hi"}', "model", "`$.model`"),
]


@pytest.mark.parametrize(
    ("path", "body", "param", "fragment"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES]
)
def test_invalid_body_is_refused_with_400(gw, key, upstream, path, body, param, fragment):
    before = upstream[1].total
    response = post_chat(gw, key, body, path=path, headers={"content-type": "application/json"})
    error, event = _refused(
        gw,
        upstream,
        response,
        400,
        "invalid_request",
        code="invalid_request",
        type="invalid_request_error",
        param=param,
    )
    assert fragment in error["message"]
    assert upstream[1].total == before
    assert event.key_id is not None and event.account_id is not None  # authenticated before the body is read


def test_body_at_the_limit_is_accepted_and_one_byte_more_is_not(gw, key, upstream):
    body = msgspec.json.encode(chat_body(max_tokens=2))
    assert len(body) < 300
    exact = body + b" " * (300 - len(body))  # trailing whitespace is valid JSON
    ok = post_chat(gw, key, exact)
    assert ok.status_code == 200, ok.text
    before = upstream[1].total
    over = post_chat(gw, key, exact + b" ")
    error = assert_openai_error(over, 413, code="request_too_large", type="invalid_request_error")
    assert "300 bytes" in error["message"]
    assert upstream[1].total == before
    event = [e for e in gw.events() if e.request_id == over.headers["x-request-id"]]
    assert len(event) == 1 and event[0].refusal_reason == "request_too_large" and event[0].status == 413


def test_body_over_limit_with_content_length(gw, key, upstream):
    before = upstream[1].total
    body = msgspec.json.encode(chat_body(padding="x" * 1_000))
    response = post_chat(gw, key, body)
    assert response.request.headers["content-length"] == str(len(body))
    error, _ = _refused(gw, upstream, response, 413, "request_too_large", code="request_too_large")
    assert "300 bytes" in error["message"]
    assert upstream[1].total == before


def test_body_over_limit_chunked(gw, key, upstream):
    before = upstream[1].total
    body = msgspec.json.encode(chat_body(padding="x" * 1_000))

    def chunks():
        for i in range(0, len(body), 64):
            yield body[i : i + 64]

    response = httpx.post(gw.base_url + "/chat/completions", content=chunks(), headers=auth(key), timeout=10)
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    _refused(gw, upstream, response, 413, "request_too_large", code="request_too_large")
    assert upstream[1].total == before


def test_chunked_body_within_limit_is_served(gw, key, upstream):
    body = msgspec.json.encode(chat_body(max_tokens=2))

    def chunks():
        yield body[:10]
        yield body[10:]

    response = httpx.post(gw.base_url + "/chat/completions", content=chunks(), headers=auth(key), timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 2


# -- headers and authentication ----------------------------------------------------------------------------------
def test_oversized_headers(gw, key, upstream):
    before = upstream[1].total
    response = post_chat(gw, key, headers={"x-filler": "a" * 2_500})
    error, event = _refused(gw, upstream, response, 431, "headers_too_large", code="headers_too_large")
    assert "2000" in error["message"]
    assert event.key_id is None  # refused before authentication
    assert upstream[1].total == before


def test_headers_just_under_the_limit_are_fine(gw, key):
    response = post_chat(gw, key, headers={"x-filler": "a" * 1_000})
    assert response.status_code == 200, response.text


def test_no_authorization_header(gw, upstream):
    before = upstream[1].total
    response = post_chat(gw, None)
    error, event = _refused(
        gw, upstream, response, 401, "missing_api_key", code="missing_api_key", type="invalid_request_error"
    )
    assert "Authorization" in error["message"] and "Bearer" in error["message"]
    assert event.key_id is None and event.account_id is None
    assert upstream[1].total == before


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Token abc", "hg_abc"])
def test_authorization_without_a_bearer_key(gw, upstream, header):
    before = upstream[1].total
    response = post_chat(gw, None, headers={"authorization": header})
    _refused(gw, upstream, response, 401, "missing_api_key", code="missing_api_key")
    assert upstream[1].total == before


def test_unknown_well_formed_key(gw, upstream):
    from hydraguard.accounts import keys

    unknown = keys.generate_key()
    assert keys.well_formed(unknown)
    before = upstream[1].total
    response = post_chat(gw, unknown)
    error, event = _refused(gw, upstream, response, 401, "invalid_api_key", code="invalid_api_key")
    assert "Incorrect API key" in error["message"]
    assert unknown not in response.text  # the key is never echoed back
    assert event.key_id is None
    assert upstream[1].total == before


@pytest.mark.parametrize("mangle", ["truncate", "checksum", "prefix", "garbage"])
def test_malformed_key(gw, key, upstream, mangle):
    bad = {
        "truncate": key[:-1],
        "checksum": key[:-1] + ("A" if key[-1] != "A" else "B"),
        "prefix": "sk_" + key[3:],
        "garbage": "not-a-key-at-all",
    }[mangle]
    before = upstream[1].total
    response = post_chat(gw, bad)
    _refused(gw, upstream, response, 401, "invalid_api_key", code="invalid_api_key")
    assert upstream[1].total == before


def test_revoked_key(gw, upstream):
    account, key = gw.account(tier="standard")
    assert post_chat(gw, key).status_code == 200
    (record,) = gw.gateway.registry.list_keys(account.id)
    gw.gateway.registry.revoke_key(record.id)
    before = upstream[1].total
    response = post_chat(gw, key)
    assert_openai_error(response, 401, code="invalid_api_key")
    events = gw.events()
    assert len(events) == 2
    refused = [e for e in events if e.request_id == response.headers["x-request-id"]]
    assert len(refused) == 1 and refused[0].refusal_reason == "invalid_api_key" and refused[0].status == 401
    assert upstream[1].total == before


def test_rotated_key_without_grace(gw, upstream):
    account, old = gw.account(tier="standard")
    registry = gw.gateway.registry
    (record,) = registry.list_keys(account.id)
    assert post_chat(gw, old).status_code == 200
    new_record, new = registry.rotate_key(record.id)
    assert new_record.account_id == account.id and new != old
    before = upstream[1].total
    refused = post_chat(gw, old)
    assert_openai_error(refused, 401, code="invalid_api_key")
    assert upstream[1].total == before
    served = post_chat(gw, new)
    assert served.status_code == 200, served.text
    assert one_event(gw, served).key_id == new_record.id
    assert one_event(gw, refused).refusal_reason == "invalid_api_key"


GRACE = 4.0  # seconds: long enough for two requests on a loaded machine


def test_rotated_key_with_grace_keeps_the_old_key_working_until_it_ends(gw):
    account, old = gw.account(tier="standard")
    registry = gw.gateway.registry
    (record,) = registry.list_keys(account.id)
    new_record, new = registry.rotate_key(record.id, grace=GRACE)
    rotated = time.monotonic()
    for key in (old, new):
        response = post_chat(gw, key)
        assert response.status_code == 200, response.text
    assert time.monotonic() - rotated < GRACE, "too slow to observe the grace period"
    time.sleep(max(0.0, GRACE + 0.1 - (time.monotonic() - rotated)))
    assert_openai_error(post_chat(gw, old), 401, code="invalid_api_key")
    assert post_chat(gw, new).status_code == 200
    assert {e.key_id for e in gw.events() if e.status == 200} == {record.id, new_record.id}


@pytest.mark.parametrize("status", [AccountStatus.SUSPENDED, AccountStatus.BANNED])
def test_suspended_or_banned_account(gw, upstream, status):
    account, key = gw.account(tier="standard")
    gw.gateway.registry.update_account(account.id, status=status)
    before = upstream[1].total
    response = post_chat(gw, key)
    error, event = _refused(
        gw, upstream, response, 403, f"account_{status.value}", code=f"account_{status.value}", type="permission_error"
    )
    assert status.value in error["message"]
    assert response.headers["x-request-id"] in error["message"]  # a reference for support
    assert event.account_id == account.id
    assert upstream[1].total == before
    gw.gateway.registry.update_account(account.id, status=AccountStatus.ACTIVE)
    assert post_chat(gw, key).status_code == 200


# -- routing -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/v1/chat/completion", "/v1/nope", "/v2/chat/completions", "/"])
def test_unknown_path(gw, key, upstream, path):
    before = upstream[1].total
    response = httpx.post(gw.url + path, json=chat_body(), headers=auth(key), timeout=10)
    error, event = _refused(gw, upstream, response, 404, "unknown_url", code="unknown_url")
    assert path in error["message"]
    assert event.endpoint == path
    assert upstream[1].total == before


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/chat/completions", "POST"),
        ("PUT", "/v1/embeddings", "POST"),
        ("DELETE", "/v1/responses", "POST"),
        ("POST", "/v1/models", "GET"),
    ],
)
def test_wrong_method(gw, key, upstream, method, path, allowed):
    before = upstream[1].total
    response = httpx.request(method, gw.url + path, headers=auth(key), timeout=10)
    error, event = _refused(gw, upstream, response, 405, "method_not_allowed", code="method_not_allowed")
    assert response.headers["allow"] == allowed
    assert method in error["message"] and allowed in error["message"]
    assert event.method == method
    assert upstream[1].total == before
