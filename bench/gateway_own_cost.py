#!/usr/bin/env python3
"""hydraguard's own CPU per gateway request, in process: no server, no network, no upstream.

The gateway app is assembled exactly as `hydraguard serve` assembles it, from the configuration and provisioning
of `bench/gateway_latency.py` (authentication, 40 non-matching decisions, the account in a group of 5, every limit
scope, the event log with its fingerprinting writer thread), and driven through its ASGI entry with the same
chat request. The upstream is a stub that answers the same `chat.completion` body at once, so what is measured is
the gateway's own code: the request path on the event loop thread, and separately the event log's writer thread
(fingerprints, Arrow conversion, fsync), which competes with the event loop for the GIL in a real server.

Output: microseconds of CPU per request for the event-loop thread and the writer thread (the writer's time is
measured by flushing the log at the end of each round), medians of the rounds. `--profile OUT` writes a cProfile
of the request path (pstats file; the top entries are printed).

    .venv/bin/python bench/gateway_own_cost.py [--requests 20000] [--rounds 5] [--concurrency 1] [--profile OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import secrets
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import uvloop

from gateway_latency import GATEWAY_TOML, HUGE, PATH, REQUEST_BODY, RESPONSE_BODY, provision
from hydraguard import config as config_module
from hydraguard.gateway.build import build_gateway


class StubUpstreamResponse:
    """What the gateway reads of an aiohttp response: the fixed answer of the nginx upstream."""

    status = 200
    content_type = "application/json"
    headers = {"content-type": "application/json"}  # noqa: RUF012 (read-only stand-in)

    async def read(self) -> bytes:
        return RESPONSE_BODY.encode()

    def release(self) -> None:
        return None


class StubSession:
    async def request(self, method: str, url: str, *, data: bytes | None, headers: dict[str, str]) -> Any:
        return StubUpstreamResponse()

    async def close(self) -> None:
        return None


async def use_stub_upstream(gateway: Any) -> None:
    await gateway._session.close()
    gateway._session = StubSession()


def http_scope(key: str) -> dict[str, Any]:
    """The scope uvicorn's httptools protocol builds for wrk's request."""
    body = REQUEST_BODY.encode()
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8080"),
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {key}".encode()),
        ],
        "state": {},
    }


async def one_request(app: Any, scope: dict[str, Any], body: bytes) -> int:
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(dict(scope), receive, send)
    return status


async def drive(app: Any, scope: dict[str, Any], requests: int, concurrency: int) -> None:
    body = REQUEST_BODY.encode()
    per_worker = requests // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            status = await one_request(app, scope, body)
            if status != 200:
                raise RuntimeError(f"the gateway answered {status}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def latencies(args: argparse.Namespace, config_path: Path, key: str) -> list[float]:
    """Wall time of each request, one at a time, with the event log's writer thread running as in a server:
    what its flushes (holding the GIL) add to the request path's latency."""
    gateway = build_gateway(config_module.load(config_path))
    await gateway.start()
    await use_stub_upstream(gateway)
    scope, body = http_scope(key), REQUEST_BODY.encode()
    await drive(gateway, scope, 2_000, 1)
    clock = time.perf_counter
    out = []
    for _ in range(args.requests * args.rounds):
        start = clock()
        await one_request(gateway, scope, body)
        out.append((clock() - start) * 1e6)
    await gateway.stop()
    return out


async def measure(args: argparse.Namespace, config_path: Path, key: str) -> dict[str, list[float]]:
    gateway = build_gateway(config_module.load(config_path))
    events = gateway.events
    await gateway.start()
    await use_stub_upstream(gateway)
    # without its writer thread the log flushes only when told: its CPU is then measured apart from the loop's
    events.close()
    scope = http_scope(key)
    await drive(gateway, scope, 2_000, args.concurrency)  # warm-up: caches, first segment
    events.flush()
    loop_us: list[float] = []
    writer_us: list[float] = []
    profiler = cProfile.Profile() if args.profile else None
    for _ in range(args.rounds):
        n = args.requests - args.requests % args.concurrency
        start = time.thread_time()
        if profiler is not None:
            profiler.enable()
        await drive(gateway, scope, n, args.concurrency)
        if profiler is not None:
            profiler.disable()
        loop_us.append((time.thread_time() - start) / n * 1e6)
        writer_us.append(flush_cpu(events) / n * 1e6)
    await gateway.stop()
    if profiler is not None:
        profiler.dump_stats(args.profile)
        pstats.Stats(str(args.profile), stream=sys.stderr).sort_stats("tottime").print_stats(30)
    return {"loop": loop_us, "writer": writer_us}


def flush_cpu(events: Any) -> float:
    """CPU seconds of one flush of everything queued, run in its own thread as the writer thread runs it."""
    spent: list[float] = []

    def run() -> None:
        start = time.thread_time()
        events.flush()
        spent.append(time.thread_time() - start)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return spent[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per round (default 20000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; medians are reported (default 5)")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight at once (default 1)")
    parser.add_argument("--decisions", type=int, default=40, help="background decisions that never match")
    parser.add_argument("--group-size", type=int, default=5, help="decision group of the bench account")
    parser.add_argument(
        "--latency",
        action="store_true",
        help="instead: each request's wall time at concurrency 1 with the writer thread running (percentiles)",
    )
    parser.add_argument("--profile", type=Path, metavar="OUT", help="write a cProfile of the request path to OUT")
    args = parser.parse_args()
    if args.requests < args.concurrency or args.rounds < 1 or args.concurrency < 1:
        parser.error("--requests must be at least --concurrency, and --rounds and --concurrency at least 1")
    with tempfile.TemporaryDirectory(prefix="hg-own-cost-") as tmp:
        config_path = Path(tmp) / "hydraguard.toml"
        config_path.write_text(
            GATEWAY_TOML.format(port=8080, upstream_port=8081, secret=secrets.token_urlsafe(32), tmp=tmp, huge=HUGE)
        )
        key, _ = provision(config_path, args.decisions, args.group_size)
        load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        if args.latency:
            times = sorted(uvloop.run(latencies(args, config_path, key)))
        else:
            results = uvloop.run(measure(args, config_path, key))
        load_after = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    if args.latency:
        pct = {p: times[min(len(times) - 1, int(len(times) * p / 100))] for p in (50, 90, 99, 99.9)}
        print(
            f"in-process latency, {len(times)} requests one at a time, writer thread on: "
            + ", ".join(f"p{p:g} {v:.0f} µs" for p, v in pct.items())
            + f", max {times[-1]:.0f} µs"
        )
        print(f"load average before / after: {load_before} / {load_after}")
        return 0
    loop_us, writer_us = statistics.median(results["loop"]), statistics.median(results["writer"])
    print(
        f"own CPU per request (concurrency {args.concurrency}, {args.rounds} x {args.requests} requests, medians): "
        f"event loop {loop_us:.1f} µs, event-log writer {writer_us:.1f} µs, total {loop_us + writer_us:.1f} µs"
    )
    print(f"rounds: loop {[round(x, 1) for x in results['loop']]} writer {[round(x, 1) for x in results['writer']]}")
    print(f"load average before / after: {load_before} / {load_after}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
