from __future__ import annotations

import json
from pathlib import Path

import pytest
import stix2

from hydraguard.intel.feeds import FeedError, FeedLimits, parse_csv, parse_list, parse_stix, read_feed_file
from hydraguard.intel.indicators import IndicatorKind

NOW = 1_700_000_000.0


def test_a_plain_list() -> None:
    feed = parse_list(b"# bad hosts\n198.51.100.7\n\n198.51.100.0/24\n2001:db8::/48\n", "ip", source="l", now=NOW)
    assert [i.value for i in feed.indicators] == ["198.51.100.7", "198.51.100.0/24", "2001:db8::/48"]
    assert all(i.sources == ("l",) and i.kind is IndicatorKind.IP for i in feed.indicators)


def test_a_list_with_bad_lines_reports_them_all_and_returns_nothing() -> None:
    lines = "\n".join(["198.51.100.1", "nope", "198.51.100.2"] + [f"bad{i}" for i in range(20)])
    with pytest.raises(FeedError) as caught:
        parse_list(lines.encode(), "ip", source="l", limits=FeedLimits(problems_reported=3))
    error = caught.value
    assert error.parsed == 2 and error.total_problems == 21
    assert [p.where for p in error.problems] == ["line 2", "line 4", "line 5"]
    assert "nothing applied" in str(error) and "line 2: ip 'nope'" in str(error)


def test_a_csv_feed_with_optional_columns() -> None:
    data = (
        b"kind,value,confidence,first_seen,expires_at,description,source\n"
        b"ip,198.51.100.0/24,90,2024-01-01T00:00:00Z,2030-01-01T00:00:00Z,proxy pool,vendor-x\n"
        b"email_domain,evil.example,,,,,\n"
    )
    feed = parse_csv(data, source="c.csv", now=NOW)
    first, second = feed.indicators
    assert (first.confidence, first.first_seen, first.description, first.sources) == (
        90,
        1_704_067_200.0,
        "proxy pool",
        ("vendor-x",),
    )
    assert first.expires_at == 1_893_456_000.0
    assert (second.kind, second.confidence, second.sources, second.first_seen) == (
        IndicatorKind.EMAIL_DOMAIN,
        50,
        ("c.csv",),
        NOW,
    )
    assert parse_csv(b"value\nAS64500\n", source="c", kind="asn").indicators[0].value == "AS64500"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"kind,value,colour\nip,198.51.100.1,red\n", "unknown: colour"),
        (b"value\n198.51.100.1\n", "and kind"),
        (b"kind,value\nip,198.51.100.1,extra\n", "line 2: 3 fields"),
        (b"kind,value,confidence\nip,198.51.100.1,high\n", "line 2: confidence 'high'"),
        (b"kind,value,expires_at\nip,198.51.100.1,soon\n", "line 2: time 'soon'"),
        (b'kind,value\nip,"198.51.100.1\n', "unexpected end of data"),
        (b"\xff\xfe\x00", "not UTF-8"),
    ],
)
def test_bad_csv_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(FeedError, match=message):
        parse_csv(data, source="c")


def test_oversized_feeds_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FeedError, match="over the 10 maximum"):
        parse_list(b"198.51.100.1\n198.51.100.2\n", "ip", source="l", limits=FeedLimits(max_bytes=10))
    with pytest.raises(FeedError, match="more than 2 indicators") as caught:
        parse_list(b"198.51.100.1\n198.51.100.2\n198.51.100.3\n", "ip", source="l", limits=FeedLimits(max_indicators=2))
    assert caught.value.parsed == 2
    path = tmp_path / "big.txt"
    path.write_bytes(b"x" * 100)
    with pytest.raises(FeedError, match="100 bytes, over the 99 maximum"):
        read_feed_file(path, FeedLimits(max_bytes=99))
    with pytest.raises(FeedError, match="cannot read it"):
        read_feed_file(tmp_path / "missing.txt", FeedLimits())


def _bundle(*objects: object) -> bytes:
    return stix2.Bundle(objects=list(objects), allow_custom=True).serialize().encode()


def _indicator(pattern: str, **kwargs: object) -> stix2.Indicator:
    return stix2.Indicator(pattern=pattern, pattern_type="stix", valid_from="2024-01-01T00:00:00Z", **kwargs)


def test_a_stix_bundle_yields_the_indicators_it_can_and_skips_the_rest() -> None:
    data = _bundle(
        stix2.Identity(name="vendor", identity_class="organization"),
        _indicator(
            "[ipv4-addr:value = '198.51.100.0/24' OR ipv6-addr:value = '2001:db8::/48']",
            confidence=80,
            valid_until="2030-01-01T00:00:00Z",
            name="proxy pool",
        ),
        _indicator("[domain-name:value = 'evil.example'] OR [email-addr:value LIKE '%@worse.example']"),
        _indicator("[autonomous-system:number = 64500]"),
        _indicator("[network-traffic:extensions.'http-request-ext'.request_header.'User-Agent' = 'Evil/1.0 (x)']"),
        _indicator("[file:hashes.'SHA-256' = '" + "a" * 64 + "']"),
        _indicator("[ipv4-addr:value = '198.51.100.9' AND ipv4-addr:value = '198.51.100.10']"),
        _indicator("[email-addr:value = 'someone@example.com']"),
        _indicator("[ipv4-addr:value = '192.0.2.1']", revoked=True),
    )
    feed = parse_stix(data, source="vendor", now=NOW)
    values = {(i.kind, i.value) for i in feed.indicators}
    assert values == {
        (IndicatorKind.IP, "198.51.100.0/24"),
        (IndicatorKind.IP, "2001:db8::/48"),
        (IndicatorKind.EMAIL_DOMAIN, "evil.example"),
        (IndicatorKind.EMAIL_DOMAIN, "worse.example"),
        (IndicatorKind.ASN, "AS64500"),
        (IndicatorKind.USER_AGENT, r"^Evil/1\.0\ \(x\)$"),
    }
    proxy = next(i for i in feed.indicators if i.value == "198.51.100.0/24")
    assert (proxy.confidence, proxy.first_seen, proxy.expires_at, proxy.description) == (
        80,
        1_704_067_200.0,
        1_893_456_000.0,
        "proxy pool",
    )
    assert feed.skipped_total == 4
    reasons = " | ".join(str(p) for p in feed.skipped)
    assert "file:hashes.SHA-256" in reasons and "AndBoolean" in reasons and "revoked" in reasons
    assert "email-addr:value =" in reasons


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "not JSON"),
        (b'{"type": "indicator"}', "not a STIX 2.1 bundle"),
        (
            json.dumps(
                {
                    "type": "bundle",
                    "id": "bundle--1",
                    "objects": [
                        {
                            "type": "indicator",
                            "spec_version": "2.1",
                            "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
                            "created": "2024-01-01T00:00:00Z",
                            "modified": "2024-01-01T00:00:00Z",
                            "pattern_type": "stix",
                            "pattern": "[ipv4-addr:value = ",
                            "valid_from": "2024-01-01T00:00:00Z",
                        }
                    ],
                }
            ).encode(),
            "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f: invalid STIX",
        ),
        (
            json.dumps(
                {
                    "type": "bundle",
                    "id": "bundle--1",
                    "objects": [{"type": "indicator", "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f"}],
                }
            ).encode(),
            "invalid STIX",
        ),
        (_bundle(_indicator("[ipv4-addr:value = '0.0.0.0/1']")), "wider than /8"),
    ],
)
def test_invalid_stix_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(FeedError, match=message):
        parse_stix(data, source="s")
