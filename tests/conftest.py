"""Shared fixtures: a counting mock upstream, gateways on free ports, and a real Redis server."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from hydraguard.accounts.models import Account
from hydraguard.config import Settings
from hydraguard.gateway.app import Gateway
from hydraguard.gateway.build import build_gateway
from hydraguard.sim.upstream import create_app
from hydraguard.testing.servers import ThreadedServer, free_port

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


class CountingApp:
    """Wraps the mock upstream: counts requests per path and responses cut short by the caller."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: Counter[str] = Counter()
        self.cut_short = 0
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.requests[scope["path"]] += 1
        finished = False

        async def recording_receive() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                self.bodies.append(message.get("body", b""))
            return message

        async def watching_send(message: Any) -> None:
            nonlocal finished
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = True
            await send(message)

        try:
            await self.app(scope, recording_receive, watching_send)
        finally:
            if not finished:
                self.cut_short += 1

    @property
    def total(self) -> int:
        return sum(self.requests.values())


@pytest.fixture(scope="session")
def upstream() -> Iterator[tuple[ThreadedServer, CountingApp]]:
    app = CountingApp(create_app())
    with ThreadedServer(app) as server:
        yield server, app


def make_settings(tmp_path: Path, upstream_url: str, **sections: dict[str, Any]) -> Settings:
    values: dict[str, Any] = {
        "server": {"upstream": upstream_url + "/v1", "secret": "test-secret-" + uuid.uuid4().hex},
        "registry": {"url": f"sqlite:///{tmp_path}/registry.db"},
        "events": {"dir": str(tmp_path / "events"), "flush_interval": 0.05},
        "logging": {"json_format": False},
    }
    for name, overrides in sections.items():
        values[name] = {**values.get(name, {}), **overrides}
    return Settings(**values)


@dataclass
class RunningGateway:
    gateway: Gateway
    server: ThreadedServer
    settings: Settings

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def base_url(self) -> str:
        return self.server.url + "/v1"

    def account(self, *, tier: str = "free", org: str | None = None, **kwargs: Any) -> tuple[Account, str]:
        registry = self.gateway.registry
        org_id = org or registry.create_org("org-" + uuid.uuid4().hex[:6], tier).id
        account = registry.create_account(org_id, tier=tier, **kwargs)
        _, key = registry.issue_key(account.id)
        return account, key

    def events(self) -> list[Any]:
        from hydraguard.events.log import iter_events

        self.wait_events_flushed()
        return list(iter_events(self.settings.events.dir))

    def wait_events_flushed(self, timeout: float = 5.0) -> None:
        log = self.gateway.events
        deadline = time.monotonic() + timeout
        for _ in range(2):  # again after a pause: requests finishing just now append their events late
            while log.written + log.rejected < log.appended and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(self.settings.events.flush_interval * 2)


@pytest.fixture
def start_gateway(
    tmp_path: Path, upstream: tuple[ThreadedServer, CountingApp]
) -> Iterator[Callable[..., RunningGateway]]:
    running: list[RunningGateway] = []

    def start(settings: Settings | None = None, **sections: dict[str, Any]) -> RunningGateway:
        settings = settings or make_settings(tmp_path, upstream[0].url, **sections)
        gateway = build_gateway(settings)
        server = ThreadedServer(gateway).start()
        handle = RunningGateway(gateway, server, settings)
        running.append(handle)
        return handle

    yield start
    for handle in running:
        handle.server.stop()


@pytest.fixture
def gateway(start_gateway: Callable[..., RunningGateway]) -> RunningGateway:
    return start_gateway()


# -- Redis -------------------------------------------------------------------------------------------------
def _start_redis() -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed; the README's test command installs it")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    client.close()
    return proc, url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """$HYDRAGUARD_TEST_REDIS_URL if set, else a redis-server the tests start and stop."""
    configured = os.environ.get("HYDRAGUARD_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    proc, url = _start_redis()
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"hgtest:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def own_redis() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A redis-server for this test alone, which the test may stop (fault tests)."""
    proc, url = _start_redis()
    yield proc, url
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A database of this test's own on the PostgreSQL server at $HYDRAGUARD_TEST_POSTGRES_URL (default: the local
    server `scripts/test` starts), dropped afterwards. Skipped only when no server answers there."""
    server_url = sa.make_url(os.environ.get("HYDRAGUARD_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    server = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    name = f"hg_test_{uuid.uuid4().hex[:12]}"
    try:
        with server.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        server.dispose()
        pytest.skip(f"no PostgreSQL server at {server_url.render_as_string()}: {exc.orig}")
    yield server_url.set(database=name).render_as_string(hide_password=False)
    with server.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    server.dispose()
