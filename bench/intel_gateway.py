"""What threat-intel matching adds to a gateway request: `Gateway._match_intel` (the call in `_authenticate`:
match the client IP, user agent and SHA-256 of the presented key, record the labels on the event, count them by
kind), in process, per call. Cases: no indicators loaded (the default deployment), and the 1-million-indicator
population of `bench/intel_match.py` loaded, with half the calls from listed IPs and 1 % with a leaked key.

    .venv/bin/python bench/intel_gateway.py [--indicators 1000000] [--calls 100000]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import ipaddress
import json
import platform
import random
import tempfile
import time

from hydraguard.config import Settings
from hydraguard.events.schema import RequestEvent
from hydraguard.gateway.build import build_gateway
from hydraguard.intel.index import IntelIndex
from hydraguard.intel.indicators import make_indicator
from hydraguard.intel.live import _Loaded
from intel_match import population, summary


def timed(gateway, calls: list[tuple[str, str, str]]) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    clock = time.perf_counter_ns
    match = gateway._match_intel
    for ip, ua, key in calls:
        event = RequestEvent(time=time.time(), request_id="req_bench", endpoint="/v1/chat/completions", client_ip=ip)
        event.user_agent = ua
        start = clock()
        match(key, event)
        out.append((clock() - start) / 1e3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--indicators", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()
    rng = random.Random(6)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            server={"secret": "bench"},
            registry={"url": f"sqlite:///{tmp}/registry.db"},
            events={"dir": f"{tmp}/events"},
        )
        gateway = build_gateway(settings)
        indicators, table, user_agents = population(args.indicators, rng)
        listed_ips = [i.value.split("/")[0] for i in indicators if i.kind == "ip"]
        leaked = {i.value for i in indicators if i.kind == "key_fingerprint"}
        keys = [f"sk-bench-{n}" for n in range(1_000)]
        calls = []
        for n in range(args.calls):
            ip = rng.choice(listed_ips) if n % 2 else str(ipaddress.IPv4Address(rng.getrandbits(32)))
            calls.append((ip, rng.choice(user_agents), keys[n % len(keys)]))
        gc.disable()
        empty = timed(gateway, calls)
        gc.enable()
        # a leaked key is matched by its SHA-256: list 1 % of the keys used
        leaked_keys = [hashlib.sha256(k.encode()).hexdigest() for k in keys[:10]]
        indicators += [make_indicator("key_fingerprint", h, source="bench") for h in leaked_keys]
        gateway.intel._loaded = _Loaded(IntelIndex(indicators, asn_table=table), frozenset())
        timed(gateway, calls[:1_000])  # warm the user-agent cache as a running gateway's would be
        gc.collect()
        gc.disable()
        loaded = timed(gateway, calls)
        gc.enable()
        event = RequestEvent(time=time.time(), request_id="r", endpoint="/v1/chat/completions", client_ip=calls[1][0])
        gateway._match_intel(keys[0], event)
        matched = event.intel_matches
        gateway.registry.close()
    print(
        json.dumps(
            {
                "machine": f"{platform.processor() or platform.machine()}, Python {platform.python_version()}",
                "indicators": len(indicators),
                "leaked_key_indicators": len(leaked) + len(leaked_keys),
                "calls": len(calls),
                "example_match": matched,
                "_match_intel, nothing loaded": summary(empty),
                "_match_intel, indicators loaded": summary(loaded),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
