"""Two gateway processes behind one Redis, under concurrent load, admit exactly the limit.

Each gateway is a real OS process (`python -m hydraguard.cli serve`) configured by one TOML file,
sharing the SQLite registry, the secret, the Redis prefix and the mock upstream. Only the account's
limit can bind: the IP and subnet limits are set far above the load.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from hydraguard.accounts.registry import Registry
from hydraguard.testing.servers import free_port
from tests.gateway.helpers import assert_openai_error, chat_body

RPM = 20  # the account's requests per minute: one request every 3 s after the burst of 20
CONCURRENCY = 5  # the other account's concurrency slots
BIG = 1_000_000

CONFIG = """
[server]
host = "127.0.0.1"
upstream = "{upstream}/v1"
secret = "{secret}"

[registry]
url = "sqlite:///{tmp}/registry.db"

[backend]
kind = "redis"
redis_url = "{redis_url}"
redis_prefix = "{prefix}"
redis_timeout = 5.0   # this test is about accuracy, not about a slow Redis
on_redis_error = "closed"

[events]
dir = "{tmp}/events"
flush_interval = 0.2

[limits.ip]
rpm = {big}
tpm = {big}
concurrency = {big}

[limits.subnet]
rpm = {big}
tpm = {big}
concurrency = {big}

[tiers.rpm-bound.account]
rpm = {rpm}

[tiers.concurrency-bound.account]
concurrency = {concurrency}

[logging]
level = "WARNING"
json_format = false
"""


@dataclass
class Pair:
    urls: list[str]
    prefix: str
    rpm_key: str
    rpm_account: str
    conc_key: str
    conc_account: str


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, deadline: float) -> None:
    while True:
        if proc.poll() is not None:
            pytest.fail(f"gateway {url} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"gateway {url} not ready in time:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


@pytest.fixture
def pair(tmp_path: Path, redis_url: str, redis_prefix: str, upstream) -> Iterator[Pair]:
    secret = "two-gateways-" + uuid.uuid4().hex
    config = tmp_path / "hydraguard.toml"
    config.write_text(
        CONFIG.format(
            upstream=upstream[0].url,
            secret=secret,
            tmp=tmp_path,
            redis_url=redis_url,
            prefix=redis_prefix,
            big=BIG,
            rpm=RPM,
            concurrency=CONCURRENCY,
        )
    )
    registry = Registry(f"sqlite:///{tmp_path}/registry.db", secret.encode())
    try:
        rpm_org = registry.create_org("rpm-org", "rpm-bound")
        rpm_account = registry.create_account(rpm_org.id, tier="rpm-bound")
        _, rpm_key = registry.issue_key(rpm_account.id)
        conc_org = registry.create_org("conc-org", "concurrency-bound")
        conc_account = registry.create_account(conc_org.id, tier="concurrency-bound")
        _, conc_key = registry.issue_key(conc_account.id)
    finally:
        registry.close()

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRAGUARD_")}
    procs: list[tuple[subprocess.Popen[bytes], str, Path]] = []
    try:
        for n in range(2):
            port = free_port()
            log = tmp_path / f"gateway-{n}.log"
            env = {**base_env, "HYDRAGUARD_EVENTS__DIR": str(tmp_path / f"events-{n}")}
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "hydraguard.cli", "--config", str(config), "serve", "--port", str(port)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=tmp_path,
                )
            procs.append((proc, f"http://127.0.0.1:{port}", log))
        deadline = time.monotonic() + 30
        for proc, url, log in procs:
            _wait_ready(proc, url, log, deadline)
        yield Pair([url for _, url, _ in procs], redis_prefix, rpm_key, rpm_account.id, conc_key, conc_account.id)
    finally:
        for proc, _, _ in procs:
            if proc.poll() is None:
                proc.terminate()
        hung = []
        for proc, url, log in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                hung.append(f"{url}:\n{log.read_text()[-2000:]}")
                proc.kill()
                proc.wait(timeout=5)
        if hung:  # a gateway must shut down on SIGTERM (its decision store's follow loop included)
            pytest.fail("gateway did not exit on SIGTERM within 10 s: " + "\n".join(hung))


async def _fire(urls: list[str], key: str, total: int, concurrency: int, body: dict) -> tuple[list, float]:
    """`total` requests, at most `concurrency` at a time, alternating between the gateways.
    Returns [(gateway index, response)] and the seconds from the first send to the last answer."""
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def one(i: int) -> tuple[int, httpx.Response]:
            async with gate:
                gw = i % len(urls)
                response = await client.post(
                    urls[gw] + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
                )
                return gw, response

        started = time.monotonic()
        results = await asyncio.gather(*(one(i) for i in range(total)))
        return results, time.monotonic() - started


def _check_refusal(response: httpx.Response, phrase: str) -> None:
    error = assert_openai_error(response, 429, code="rate_limit_exceeded", type="requests")
    assert phrase in error["message"], error
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["x-request-id"].startswith("req_")


async def test_two_gateways_share_the_request_limit_exactly(pair: Pair, upstream) -> None:
    forwarded = upstream[1].total
    results, elapsed = await _fire(pair.urls, pair.rpm_key, 200, 32, chat_body(max_tokens=2))
    statuses = [r.status_code for _, r in results]
    assert set(statuses) <= {200, 429}, statuses
    admitted = statuses.count(200)
    interval = 60.0 / RPM
    refill = math.floor(elapsed / interval)  # what GCRA may have given back while the test ran
    assert RPM <= admitted <= RPM + refill, f"admitted {admitted} in {elapsed:.2f}s"
    assert upstream[1].total - forwarded == admitted  # the upstream saw exactly the admitted ones
    for gw in range(2):  # both gateways took part on both sides of the limit
        assert any(g == gw and r.status_code == 200 for g, r in results), f"gateway {gw} admitted nothing"
        assert any(g == gw and r.status_code == 429 for g, r in results), f"gateway {gw} refused nothing"

    ok = [r for _, r in results if r.status_code == 200]
    for response in ok:
        assert response.json()["object"] == "chat.completion"
        assert response.headers["x-ratelimit-limit-requests"] == str(RPM)
    if refill == 0:  # one shared bucket: every admission saw a different remaining count
        remaining = sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok)
        assert remaining == list(range(RPM))
    for _, response in results:
        if response.status_code == 429:
            _check_refusal(response, f"rpm on account: Limit {RPM}, Remaining 0")
            assert response.headers["x-ratelimit-limit-requests"] == str(RPM)
            assert response.headers["x-ratelimit-remaining-requests"] == "0"
    print(f"admitted {admitted} of 200 in {elapsed:.2f}s")  # shown with -s / on failure


async def test_two_gateways_share_concurrency_slots_exactly(pair: Pair, redis_url: str) -> None:
    """Slow requests (1 s at the upstream) hold their slots; fired all at once, exactly
    `CONCURRENCY` get through, whichever gateway they reach, and every slot comes back."""
    results, elapsed = await _fire(pair.urls, pair.conc_key, 30, 30, chat_body("slow-1.0", max_tokens=2))
    assert elapsed < 5
    statuses = [r.status_code for _, r in results]
    refused = [r for _, r in results if r.status_code == 429]
    for response in refused:
        _check_refusal(response, "concurrent requests for this account")
    # the refusals come back at once, long before the first admitted request frees its slot
    admitted = statuses.count(200)
    assert admitted == CONCURRENCY, statuses
    assert len(refused) == 30 - CONCURRENCY
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.zcard(f"{pair.prefix}l:conc:account:{pair.conc_account}") == 0  # all released
    finally:
        client.close()
    again, _ = await _fire(pair.urls, pair.conc_key, CONCURRENCY, CONCURRENCY, chat_body(max_tokens=2))
    assert [r.status_code for _, r in again] == [200] * CONCURRENCY
