"""`replay`: a scenario's window sent to a live gateway on 127.0.0.1 with real keys, as the simulated clients
would send it."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import httpx
import msgspec
import pytest

from hydraguard.sim import network, replay
from tests.closing_server import IdleClosingServer
from tests.conftest import CountingApp, RunningGateway

from .conftest import shortened

UNLIMITED = {"ip": {"rpm": 1_000_000}, "subnet": {"rpm": 1_000_000}}


@pytest.fixture(scope="module")
def traffic() -> replay.Traffic:
    return replay.plan(shortened("seed-hydra-small", 1), hours=2, max_requests=240)


def test_the_plan_is_the_window_of_served_requests(traffic: replay.Traffic) -> None:
    block = traffic.block
    assert len(traffic) == 240
    assert (block.prompt >= 0).all() and (block.time[1:] >= block.time[:-1]).all()
    assert block.time[-1] < traffic.start + 2 * 3600
    roles = Counter(traffic.role(int(a)) for a in block.account)
    assert roles[replay.LEGIT] > 0 and roles[replay.CAMPAIGN] > 0  # the campaign in its legitimate background


def test_a_window_outside_the_scenario_is_refused() -> None:
    scenario = shortened("seed-hydra-small", 1)
    for hours in (0, -1, 25):
        with pytest.raises(ValueError, match="window"):
            replay.plan(scenario, hours=hours)


def test_sign_ups_keep_their_age_before_the_window_and_are_compressed_inside_it(traffic: replay.Traffic) -> None:
    wall = 1_000_000.0
    assert replay.live_time(traffic.start - 86_400 * 30, traffic, wall, 100.0) == wall - 86_400 * 30
    assert replay.live_time(traffic.start + 3_600, traffic, wall, 100.0) == wall + 36.0


def test_replay_drives_a_live_gateway(
    traffic: replay.Traffic,
    start_gateway: Callable[..., RunningGateway],
    upstream: tuple[object, CountingApp],
) -> None:
    gateway = start_gateway(server={"trusted_proxies": ["127.0.0.1/32"]}, limits=UNLIMITED)
    wall_start = time.time() + 0.5
    seeded = replay.seed_registry(gateway.gateway.registry, traffic, wall_start=wall_start, speedup=7_200.0)
    assert set(seeded.accounts) == {int(a) for a in traffic.block.account}
    live = {a.id: a for a in gateway.gateway.registry.list_accounts()}
    assert set(seeded.accounts.values()) <= set(live)
    upstream_bodies_before = len(upstream[1].bodies)

    progress: list[int] = []
    outcome = asyncio.run(
        asyncio.wait_for(
            replay.send(
                traffic,
                seeded,
                gateway.url,
                wall_start=wall_start,
                speedup=7_200.0,  # two scenario hours in one second
                concurrency=16,
                progress=lambda done, total: progress.append(done),
            ),
            timeout=60,
        )
    )
    assert outcome.sent == len(traffic) == progress[-1] and outcome.transport_errors == 0
    assert outcome.served(replay.LEGIT) + outcome.served(replay.CAMPAIGN) == len(traffic), outcome.statuses

    events = gateway.events()
    assert len(events) == len(traffic)
    by_time = sorted(events, key=lambda e: e.time)
    expected_ips = network.to_strings(traffic.block.ip)
    assert Counter(e.client_ip for e in events) == Counter(expected_ips)  # X-Forwarded-For from a trusted proxy
    user_agents = traffic.world.user_agents
    assert Counter(e.user_agent for e in events) == Counter(user_agents[int(u)] for u in traffic.block.ua)
    role_of = seeded.role_of(traffic)
    assert {role_of[e.account_id] for e in by_time} == {replay.LEGIT, replay.CAMPAIGN}
    assert by_time[-1].time - by_time[0].time < 10  # time-compressed: two hours in about a second

    # the gateway forwarded the simulated clients' real prompts: the bytes of the scenario's bodies
    sent = upstream[1].bodies[upstream_bodies_before:]
    first = traffic.world.body(int(traffic.block.prompt[0]), int(traffic.block.profile[0]))
    texts = {m["content"] for m in msgspec.json.decode(first)["messages"]}
    assert any(texts <= {m["content"] for m in msgspec.json.decode(b)["messages"]} for b in sent)


def test_seeded_accounts_keep_their_cards_and_sign_up_ages(
    traffic: replay.Traffic, start_gateway: Callable[..., RunningGateway]
) -> None:
    gateway = start_gateway()
    seeded = replay.seed_registry(gateway.gateway.registry, traffic, wall_start=time.time(), speedup=60.0)
    live = {a.id: a for a in gateway.gateway.registry.list_accounts()}
    sim = {i: t for t in traffic.world.registry.tables for i in range(t.first, t.first + len(t))}
    by_card: dict[str, set[str | None]] = {}
    for index, account_id in seeded.accounts.items():
        table = sim[index]
        card = table.payment_fingerprint[index - table.first]
        if card is not None:
            by_card.setdefault(card, set()).add(live[account_id].payment_fingerprint)
        assert live[account_id].email_domain == table.email_domain[index - table.first]
    assert all(len(live_cards) == 1 and None not in live_cards for live_cards in by_card.values())
    assert any(
        len([i for i in seeded.accounts if sim[i].payment_fingerprint[i - sim[i].first] == c]) > 1 for c in by_card
    )  # the campaign's shared cards are shared in the live registry too


def test_the_replay_never_sends_on_a_connection_the_server_is_closing() -> None:
    """uvicorn closes a connection idle for 5 s; httpx keeps one for 5 s by default, so now and then a request went
    out on a closing connection and was lost. The replay's client drops idle connections after 2 s."""

    async def two_requests_apart(client: httpx.AsyncClient, url: str) -> list[int]:
        async with client:
            first = await client.post(url, content=b"{}")
            await asyncio.sleep(2.5)
            return [first.status_code, (await client.post(url, content=b"{}")).status_code]

    with IdleClosingServer(idle_s=2.2) as server:
        with pytest.raises(httpx.TransportError):  # the race is real with httpx's default keep-alive
            asyncio.run(two_requests_apart(httpx.AsyncClient(), server.url))
        assert asyncio.run(two_requests_apart(replay.client_for(4), server.url)) == [200, 200]
        assert server.dropped == 1 and server.answered == 3
