"""The TLS fingerprint the edge passes in `server.tls_fingerprint_header`: recorded on the event only from a
trusted proxy, and only as 1 to 128 printable ASCII characters; any other value is null, never a failure."""

from __future__ import annotations

import httpx
import pytest

from tests.gateway.helpers import assert_openai_error, one_event, post_chat

JA4 = "t13d1516h2_8daaf6152771_b186095e22b6"
LOOPBACK = ["127.0.0.1/32"]  # the tests' peer


def test_recorded_from_a_trusted_proxy_allowed_or_refused(start_gateway):
    gw = start_gateway(server={"trusted_proxies": LOOPBACK, "tls_fingerprint_header": "CF-JA4"})
    _, key = gw.account()
    headers = {"cf-ja4": JA4, "x-forwarded-for": "198.51.100.7"}
    allowed = post_chat(gw, key, headers=headers)
    assert allowed.status_code == 200
    event = one_event(gw, allowed)
    assert event.tls_fingerprint == JA4 and event.client_ip == "198.51.100.7"

    refused = post_chat(gw, None, headers=headers)
    assert_openai_error(refused, 401, code="missing_api_key")
    assert one_event(gw, refused).tls_fingerprint == JA4
    unknown = httpx.get(gw.url + "/v1/nowhere", headers=headers, timeout=10)
    assert unknown.status_code == 404
    assert one_event(gw, unknown).tls_fingerprint == JA4


@pytest.mark.parametrize("trusted", [[], ["10.0.0.0/8"]], ids=["no-trusted-proxies", "peer-not-trusted"])
def test_ignored_from_an_untrusted_peer(start_gateway, trusted):
    """A client cannot claim a fingerprint: the header is only believed from a trusted proxy."""
    gw = start_gateway(server={"trusted_proxies": trusted, "tls_fingerprint_header": "cf-ja4"})
    _, key = gw.account()
    response = post_chat(gw, key, headers={"cf-ja4": JA4})
    assert response.status_code == 200
    assert one_event(gw, response).tls_fingerprint is None


def test_ignored_while_the_setting_is_unset(start_gateway):
    gw = start_gateway(server={"trusted_proxies": LOOPBACK})
    assert gw.settings.server.tls_fingerprint_header == ""
    _, key = gw.account()
    response = post_chat(gw, key, headers={"cf-ja4": JA4, "x-ja4": JA4})
    assert response.status_code == 200
    assert one_event(gw, response).tls_fingerprint is None


@pytest.mark.parametrize(
    ("value", "recorded"),
    [
        ("a" * 128, "a" * 128),
        ("a" * 129, None),
        ("t13d 1516", "t13d 1516"),
        ("t13d\t1516", None),
        (b"t13d\xe9", None),
    ],
    ids=["128-chars", "129-chars", "space", "tab", "non-ascii"],
)
def test_a_value_is_bounded_and_printable_ascii(start_gateway, value, recorded):
    gw = start_gateway(server={"trusted_proxies": LOOPBACK, "tls_fingerprint_header": "x-ja4"})
    _, key = gw.account()
    response = post_chat(gw, key, headers={"x-ja4": value})
    assert response.status_code == 200, response.text
    assert one_event(gw, response).tls_fingerprint == recorded
