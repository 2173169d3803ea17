"""Threat-intel matching cost on the request path: `IntelIndex.match(ip, user_agent, key_fingerprint, now)` with
1 million indicators loaded (IPv4/IPv6 addresses and CIDRs, ASNs through an IP-to-ASN table, email domains,
payment and key hashes, user-agent patterns, template signatures). Reports median and p99 per call, build time
and memory, next to a baseline in the same run: the per-prefix-length dict lookup the decision store uses for
CIDRs (one `ipaddress` parse, one dict probe per prefix length in use). Target (issue 6): <= 5 microseconds.

    .venv/bin/python bench/intel_match.py [--indicators 1000000] [--calls 200000]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import ipaddress
import json
import platform
import random
import statistics
import time
import tracemalloc

from hydraguard.intel.asn import AsnNetwork, AsnTable
from hydraguard.intel.index import IntelIndex
from hydraguard.intel.indicators import Indicator, make_indicator

NOW = 1_700_000_000.0


def population(total: int, rng: random.Random) -> tuple[list[Indicator], AsnTable, list[str]]:
    def hexes(n: int, width: int) -> list[str]:
        return [hashlib.sha256(f"{width}:{i}".encode()).hexdigest()[:width] for i in range(n)]

    shares = {"v4": 0.55, "v4net": 0.2, "v6": 0.05, "domain": 0.1, "payment": 0.05, "key": 0.03, "asn": 0.005}
    count = {k: int(total * v) for k, v in shares.items()}
    count["ua"] = 1_000
    count["template"] = total - sum(count.values())
    values: list[tuple[str, str]] = []
    values += [("ip", str(ipaddress.IPv4Address(rng.getrandbits(32)))) for _ in range(count["v4"])]
    for _ in range(count["v4net"]):
        prefix = rng.choice([16, 20, 22, 24, 24, 24, 26, 28])
        values.append(("ip", str(ipaddress.IPv4Network((rng.getrandbits(32), prefix), strict=False))))
    for _ in range(count["v6"]):
        prefix = rng.choice([48, 64, 128])
        values.append(("ip", str(ipaddress.IPv6Network((rng.getrandbits(128), prefix), strict=False))))
    values += [("email_domain", f"d{i}.example{i % 97}.com") for i in range(count["domain"])]
    values += [("payment_fingerprint", h) for h in hexes(count["payment"], 32)]
    values += [("key_fingerprint", h) for h in hexes(count["key"], 64)]
    values += [("asn", f"AS{64_512 + i}") for i in range(count["asn"])]
    values += [("user_agent", rf"^scraper-{i}/\d+") for i in range(count["ua"])]
    values += [("template_signature", h) for h in hexes(count["template"], 64)]
    indicators = list({i.id: i for i in (make_indicator(k, v, source="bench", now=NOW) for k, v in values)}.values())
    networks = []
    for i in range(50_000):  # an IP-to-ASN table of 50,000 /20s, a tenth of them announced by indicated ASNs
        first = rng.getrandbits(20) << 12
        networks.append(AsnNetwork(4, first, first + 4095, 64_512 + i % (count["asn"] * 10)))
    user_agents = [f"Mozilla/5.0 client-{i}" for i in range(490)] + [f"scraper-{i}/2" for i in range(10)]
    return indicators, AsnTable(networks), user_agents


class PerPrefixBaseline:
    """The decision store's CIDR lookup, applied to the same IP indicators."""

    def __init__(self, indicators: list[Indicator]) -> None:
        self.networks: dict[tuple[int, int], dict[int, str]] = {}
        for indicator in indicators:
            if indicator.kind == "ip":
                net = ipaddress.ip_network(indicator.value)
                self.networks.setdefault((net.version, net.prefixlen), {})[int(net.network_address)] = indicator.label

    def match(self, ip: str) -> list[str]:
        addr = ipaddress.ip_address(ip)
        number, bits = int(addr), addr.max_prefixlen
        found = []
        for (version, prefix), networks in self.networks.items():
            if version == addr.version:
                label = networks.get(number >> (bits - prefix) << (bits - prefix))
                if label:
                    found.append(label)
        return found


def timed(calls: list[tuple[str, str, str]], fn) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    clock = time.perf_counter_ns
    for ip, ua, key in calls:
        start = clock()
        fn(ip, ua, key)
        out.append((clock() - start) / 1e3)
    return out


def summary(samples: list[float]) -> dict[str, float]:
    samples = sorted(samples)
    return {
        "median_us": round(statistics.median(samples), 3),
        "p99_us": round(samples[int(len(samples) * 0.99)], 3),
        "mean_us": round(statistics.fmean(samples), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--indicators", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    rng = random.Random(6)
    indicators, table, user_agents = population(args.indicators, rng)
    gc.collect()
    start = time.perf_counter()
    index = IntelIndex(indicators, asn_table=table)
    build_s = time.perf_counter() - start
    del index
    gc.collect()
    tracemalloc.start()
    index = IntelIndex(indicators, asn_table=table)
    memory_mb = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()
    baseline = PerPrefixBaseline(indicators)

    listed_ips = [i.value.split("/")[0] for i in indicators if i.kind == "ip"]
    keys = [i.value for i in indicators if i.kind == "key_fingerprint"]
    calls = []
    for n in range(args.calls):
        ip = rng.choice(listed_ips) if n % 2 else str(ipaddress.IPv4Address(rng.getrandbits(32)))
        key = rng.choice(keys) if n % 100 == 0 else hashlib.sha256(str(n).encode()).hexdigest()
        calls.append((ip, rng.choice(user_agents), key))
    for ip, ua, key in calls[:1_000]:  # warm the user-agent cache as a running gateway's would be
        index.match(ip, ua, key, NOW)
    hits = sum(bool(index.match(ip, ua, key, NOW)) for ip, ua, key in calls)
    gc.disable()
    intel = timed(calls, lambda ip, ua, key: index.match(ip, ua, key, NOW))
    ip_only = timed(calls, lambda ip, ua, key: index.match(ip, None, None, NOW))
    per_prefix = timed(calls, lambda ip, ua, key: baseline.match(ip))
    cold_ua = timed(
        [(ip, f"never-seen-{n}", key) for n, (ip, _, key) in enumerate(calls[:20_000])],
        lambda ip, ua, key: index.match(ip, ua, key, NOW),
    )
    gc.enable()
    print(
        json.dumps(
            {
                "machine": f"{platform.processor() or platform.machine()}, Python {platform.python_version()}",
                "indicators": len(indicators),
                "ip_indicators": len(listed_ips),
                "prefix_lengths_in_use": len(baseline.networks),
                "asn_table_rows": len(table),
                "calls": len(calls),
                "calls_with_a_match": hits,
                "build_s": round(build_s, 2),
                "index_memory_mb": round(memory_mb, 1),
                "match(ip, ua, key)": summary(intel),
                "match(ip) only": summary(ip_only),
                "match with an uncached user agent": summary(cold_ua),
                "baseline: per-prefix dict, ip only": summary(per_prefix),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
