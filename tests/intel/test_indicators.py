from __future__ import annotations

import hashlib

import pytest

from hydraguard.intel.indicators import (
    IndicatorError,
    IndicatorKind,
    key_fingerprint,
    make_indicator,
    merge,
    normalize,
    parse_time,
)


@pytest.mark.parametrize(
    ("kind", "value", "normalized"),
    [
        ("ip", "198.51.100.7", "198.51.100.7"),
        ("ip", "198.51.100.7/32", "198.51.100.7"),
        ("ip", "198.51.100.0/24", "198.51.100.0/24"),
        ("ip", "2001:DB8::1", "2001:db8::1"),
        ("ip", "2001:db8::/32", "2001:db8::/32"),
        ("ip", "::ffff:198.51.100.7", "198.51.100.7"),
        ("asn", "as64500", "AS64500"),
        ("asn", "64500", "AS64500"),
        ("email_domain", "@Mail.Example.COM.", "mail.example.com"),
        ("email_domain", "bücher.example", "xn--bcher-kva.example"),
        ("payment_fingerprint", "AB" * 16, "ab" * 16),
        ("key_fingerprint", "Cd" * 32, "cd" * 32),
        ("template_signature", "0123ABCD" * 8, "0123abcd" * 8),
        ("user_agent", r"^python-requests/\d+", r"^python-requests/\d+"),
    ],
)
def test_values_are_normalized(kind: str, value: str, normalized: str) -> None:
    assert normalize(kind, value) == normalized


@pytest.mark.parametrize(
    ("kind", "value", "reason"),
    [
        ("ip", "198.51.100.7/24", "host bits"),
        ("ip", "10.0.0.0/7", "wider than /8"),
        ("ip", "::/8", "wider than /16"),
        ("ip", "not-an-ip", "does not appear"),
        ("asn", "AS0", "AS<number>"),
        ("asn", "AS4294967296", "AS<number>"),
        ("email_domain", "someone@example.com", "never an address"),
        ("email_domain", "localhost", "two labels"),
        ("email_domain", "-bad-.example", "valid domain"),
        ("payment_fingerprint", "xyz", "hexadecimal"),
        ("key_fingerprint", "hg_" + "a" * 38, "hexadecimal"),  # a raw key is refused
        ("template_signature", "ab" * 16, "hexadecimal"),
        ("user_agent", "(curl)", "non-capturing"),
        ("user_agent", "curl|", "every user agent"),
        ("user_agent", "[unclosed", "unterminated"),
        ("user_agent", "x(?i)y", "global flags"),
        ("colour", "red", "unknown indicator kind"),
        ("ip", "", "1 to 512"),
    ],
)
def test_bad_values_are_refused_with_the_reason(kind: str, value: str, reason: str) -> None:
    with pytest.raises(IndicatorError, match=reason):
        normalize(kind, value)


def test_the_id_depends_on_kind_and_normalized_value_only() -> None:
    a = make_indicator("email_domain", "Example.COM", source="a", now=1.0)
    b = make_indicator("email_domain", "example.com.", source="b", confidence=90, now=2.0)
    c = make_indicator("ip", "198.51.100.7", source="a", now=1.0)
    assert a.id == b.id != c.id
    assert a.label == f"email_domain:{a.id}"


def test_merge_unites_sources_and_widens_confidence_and_time() -> None:
    old = make_indicator(
        "ip",
        "198.51.100.0/24",
        source="feed-a",
        confidence=40,
        first_seen=100,
        last_seen=200,
        expires_at=1_000,
        description="old",
    )
    new = make_indicator(
        "ip",
        "198.51.100.0/24",
        source="feed-b",
        confidence=80,
        first_seen=150,
        last_seen=300,
        expires_at=900,
        description="new",
    )
    merged = merge(old, new)
    assert merged.sources == ("feed-a", "feed-b")
    assert merged.confidence == 80
    assert (merged.first_seen, merged.last_seen, merged.expires_at) == (100, 300, 1_000)
    assert merged.description == "new"
    assert merge(merged, make_indicator("ip", "198.51.100.0/24", source="c", now=50)).expires_at is None


def test_merge_refuses_different_indicators() -> None:
    with pytest.raises(ValueError, match="different indicators"):
        merge(make_indicator("ip", "198.51.100.1", source="a"), make_indicator("ip", "198.51.100.2", source="a"))


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"confidence": 101}, "0 to 100"),
        ({"confidence": True}, "0 to 100"),
        ({"source": ""}, "source"),
        ({"first_seen": 10, "last_seen": 5}, "before first_seen"),
    ],
)
def test_bad_fields_are_refused(kwargs: dict[str, object], reason: str) -> None:
    with pytest.raises(IndicatorError, match=reason):
        make_indicator("ip", "198.51.100.7", **{"source": "t", **kwargs})  # type: ignore[arg-type]


def test_expiry_and_times() -> None:
    indicator = make_indicator(IndicatorKind.ASN, "AS1", source="t", expires_at=parse_time("2025-01-01T00:00:00Z"))
    assert indicator.expires_at == 1_735_689_600
    assert indicator.active(1_735_689_599) and not indicator.active(1_735_689_600)
    assert parse_time("1735689600") == parse_time("2025-01-01T00:00:00") == 1_735_689_600
    with pytest.raises(IndicatorError, match="ISO 8601"):
        parse_time("next tuesday")


def test_key_fingerprint_is_sha256_hex_and_a_valid_indicator() -> None:
    fingerprint = key_fingerprint("hg_abc")
    assert fingerprint == hashlib.sha256(b"hg_abc").hexdigest()
    assert normalize("key_fingerprint", fingerprint) == fingerprint
