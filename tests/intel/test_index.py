from __future__ import annotations

import ipaddress
import random

from hydraguard.detect.request import signature_bands, template_fingerprint
from hydraguard.intel.asn import AsnTable
from hydraguard.intel.index import IntelIndex
from hydraguard.intel.indicators import Indicator, key_fingerprint, make_indicator

NOW = 1_700_000_000.0


def ind(kind: str, value: str, **kwargs: object) -> Indicator:
    return make_indicator(kind, value, source="test", now=NOW - 10, **kwargs)  # type: ignore[arg-type]


def test_nested_networks_and_addresses_all_match() -> None:
    wide, narrow, one = ind("ip", "10.0.0.0/8"), ind("ip", "10.1.0.0/16"), ind("ip", "10.1.2.3")
    index = IntelIndex([wide, narrow, one])
    assert set(index.match("10.1.2.3", None, None, NOW)) == {wide.label, narrow.label, one.label}
    assert set(index.match("10.1.2.4", None, None, NOW)) == {wide.label, narrow.label}
    assert index.match("10.2.0.0", None, None, NOW) == (wide.label,)
    assert index.match("10.255.255.255", None, None, NOW) == (wide.label,)
    assert index.match("11.0.0.0", None, None, NOW) == ()
    assert index.match("9.255.255.255", None, None, NOW) == ()
    assert index.match("::ffff:10.1.2.3", None, None, NOW) == index.match("10.1.2.3", None, None, NOW)


def test_ipv6_and_edges_of_the_address_space() -> None:
    net, top, bottom = ind("ip", "2001:db8::/32"), ind("ip", "255.255.255.255"), ind("ip", "0.0.0.0")
    index = IntelIndex([net, top, bottom])
    assert index.match("2001:db8:ffff::1", None, None, NOW) == (net.label,)
    assert index.match("2001:db9::", None, None, NOW) == ()
    assert index.match("255.255.255.255", None, None, NOW) == (top.label,)
    assert index.match("0.0.0.0", None, None, NOW) == (bottom.label,)
    assert index.match("not an ip", None, None, NOW) == ()
    assert index.match("fe80::1%eth0", None, None, NOW) == ()


def test_asn_matches_through_the_most_specific_table_network() -> None:
    table = AsnTable.from_text("cidr,asn\n8.0.0.0/8,3356\n8.8.8.0/24,15169\n2001:db8::/32,AS64500\n")
    level3, google, v6 = ind("asn", "AS3356"), ind("asn", "15169"), ind("asn", "AS64500")
    index = IntelIndex([level3, v6], asn_table=table)
    assert index.match("8.8.4.4", None, None, NOW) == (level3.label,)
    assert index.match("8.8.8.8", None, None, NOW) == ()  # announced by AS15169, not AS3356
    assert index.match("2001:db8::1", None, None, NOW) == (v6.label,)
    assert IntelIndex([google], asn_table=table).match("8.8.8.8", None, None, NOW) == (google.label,)
    assert IntelIndex([level3]).match("8.8.4.4", None, None, NOW) == ()  # no table, no ASN matching


def test_user_agent_patterns_key_fingerprints_and_expiry() -> None:
    curl, requests_ = ind("user_agent", "^curl/"), ind("user_agent", r"python-requests/\d+")
    key = ind("key_fingerprint", key_fingerprint("hg_leaked"))
    gone = ind("ip", "192.0.2.1", expires_at=NOW)
    index = IntelIndex([curl, requests_, key, gone])
    assert index.match(None, "CURL/8.1", None, NOW) == (curl.label,)
    assert index.match(None, "x python-requests/2.31", None, NOW) == (requests_.label,)
    assert index.match(None, "x python-requests/2.31", None, NOW) == (requests_.label,)  # cached
    assert index.match(None, "Mozilla/5.0", None, NOW) == ()
    assert index.match(None, None, key_fingerprint("hg_leaked"), NOW) == (key.label,)
    assert index.match(None, None, key_fingerprint("hg_other"), NOW) == ()
    assert index.match("192.0.2.1", None, None, NOW - 1) == (gone.label,)
    assert index.match("192.0.2.1", None, None, NOW) == ()


def test_signup_matches_parent_domains_payment_and_ip() -> None:
    domain, payment, net = (
        ind("email_domain", "evil.example"),
        ind("payment_fingerprint", "ab" * 16),
        ind("ip", "198.51.100.0/24"),
    )
    index = IntelIndex([domain, payment, net])
    assert index.match_signup("evil.example", None, None, NOW) == (domain.label,)
    assert index.match_signup("Mail.EVIL.example.", None, None, NOW) == (domain.label,)
    assert index.match_signup("notevil.example", None, None, NOW) == ()
    assert index.match_signup("example", None, None, NOW) == ()
    assert index.match_signup(None, "AB" * 16, "198.51.100.9", NOW) == (payment.label, net.label)


def test_templates_match_on_a_shared_band() -> None:
    template = "You are a {role}. Explain step by step, showing all reasoning, how to solve: {task}. Answer in JSON."
    _, signature = template_fingerprint(template.format(role="tutor", task="integrate x squared"))
    _, filled = template_fingerprint(template.format(role="tutor", task="factor a quadratic equation"))
    _, other = template_fingerprint("Write a short poem about autumn leaves falling in a quiet park at dusk.")
    indicator = ind("template_signature", signature)
    index = IntelIndex([indicator])
    assert index.match_templates(signature_bands(signature), NOW) == (indicator.label,)
    assert set(signature_bands(filled)) & set(signature_bands(signature))  # the premise of the next line
    assert index.match_templates(signature_bands(filled), NOW) == (indicator.label,)
    assert index.match_templates(signature_bands(other), NOW) == ()


def test_matches_agree_with_a_naive_scan_on_random_networks() -> None:
    rng = random.Random(7)
    indicators = []
    for _ in range(400):
        prefix = rng.choice([8, 12, 16, 20, 24, 28, 32])
        address = ipaddress.IPv4Address(rng.getrandbits(32))
        net = ipaddress.IPv4Network((address, prefix), strict=False)
        indicators.append(ind("ip", str(net)))
    for _ in range(100):
        net = ipaddress.IPv6Network(
            (ipaddress.IPv6Address(rng.getrandbits(128)), rng.choice([16, 32, 48, 64, 128])), strict=False
        )
        indicators.append(ind("ip", str(net)))
    indicators = list({i.id: i for i in indicators}.values())
    index = IntelIndex(indicators)
    networks = [(i.label, ipaddress.ip_network(i.value)) for i in indicators]
    probes = [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(2_000)]
    probes += [str(n.network_address) for _, n in networks] + [str(n.broadcast_address) for _, n in networks]
    probes += [str(n.broadcast_address + 1) for _, n in networks if int(n.broadcast_address) < 2**n.max_prefixlen - 1]
    for probe in probes:
        address = ipaddress.ip_address(probe)
        expected = {label for label, net in networks if address in net}
        assert set(index.match(probe, None, None, NOW)) == expected, probe
