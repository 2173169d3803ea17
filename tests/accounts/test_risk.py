"""Signup facts: what is kept of a signup (normalized, personal values hashed) and the disposable-domain check."""

from __future__ import annotations

import pytest

from hydraguard.accounts import keys
from hydraguard.accounts.risk import SignupError, SignupRequest, facts_of, is_disposable

SECRET = b"risk-test-secret"


def test_facts_keep_no_raw_personal_value() -> None:
    request = SignupRequest(
        email="Jane.Doe+promo@Example.ORG",
        ip="2001:DB8::7",
        device_id="device-123",
        payment_method="pm_4242",
        region="us-ca",
    )
    facts = facts_of(SECRET, "org_1", request)
    assert facts.email_domain == "example.org" and facts.email_pattern is None  # no digits: no burst shape
    assert facts.ip == "2001:db8::7" and facts.subnet == "2001:db8::/48"
    assert facts.device == keys.keyed_fingerprint(SECRET, "device", "device-123")
    assert facts.payment_fingerprint == keys.keyed_fingerprint(SECRET, "payment", "pm_4242")
    assert facts.region == "US-CA"
    assert "device-123" not in repr(facts) and "pm_4242" not in repr(facts) and "jane" not in repr(facts).lower()


def test_numbered_addresses_share_one_shape() -> None:
    shape = [facts_of(SECRET, "o", SignupRequest(email=e)).email_pattern for e in ("ml.lab7@x.io", "ml.lab81+a@X.io")]
    assert shape[0] is not None and shape[0] == shape[1]
    assert facts_of(SECRET, "o", SignupRequest(email="ml.lab7@y.io")).email_pattern != shape[0]
    assert facts_of(SECRET, "o", SignupRequest(email="mx.lab7@x.io")).email_pattern != shape[0]
    assert facts_of(SECRET, "o", SignupRequest(ip="198.51.100.77")).subnet == "198.51.100.0/24"


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (SignupRequest(email="not-an-address"), "is not an address"),
        (SignupRequest(ip="10.0.0.300"), "is not an IP address"),
        (SignupRequest(region="Germany"), "ISO 3166"),
    ],
)
def test_unreadable_values_are_refused(request_: SignupRequest, message: str) -> None:
    with pytest.raises(SignupError, match=message):
        facts_of(SECRET, "o", request_)


def test_disposable_domains_come_from_the_maintained_list() -> None:
    assert is_disposable("mailinator.com") and is_disposable("inbox.mailinator.com")
    assert not is_disposable("example.org") and not is_disposable("gmail.com")
