"""`replay`: drive a live gateway with a scenario's traffic, time-compressed, so enforcement is tested end to end.

The scenario is simulated in memory (the same world `simulate` writes), and every served request of a window of
it is sent to the gateway as the exact bytes the simulated client sends (`World.body`: real prompt text, so the
gateway's own fingerprinting sees what an attacker would send), with the client's user agent and, as
`X-Forwarded-For`, its IP address (the gateway believes it only from its `server.trusted_proxies`).

The simulated accounts are first created in the gateway's registry, with real keys. Scenario time maps to wall
time divided by `speedup`; an account's sign-up before the window keeps its real age at the window's start (so
an account signed up a year ago is not mistaken for a new one), and sign-ups inside the window are compressed
like the traffic. Requests the simulated provider refused (banned accounts) are not sent: the live gateway's
own decisions do the refusing.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import numpy as np

from hydraguard.accounts.registry import Registry
from hydraguard.sim import generate, network
from hydraguard.sim.output import Block
from hydraguard.sim.scenario import CampaignPopulation, Scenario
from hydraguard.sim.timing import DAY
from hydraguard.sim.world import World

Progress = Callable[[int, int], None]  # (requests sent, requests in the window)
LEGIT, CAMPAIGN = "legit", "campaign"


@dataclass(frozen=True)
class Traffic:
    """The served requests of a scenario's window, in time order."""

    world: World
    block: Block
    campaign: np.ndarray  # per global account index: part of a campaign
    start: float  # scenario time of the window's start
    hours: float

    def __len__(self) -> int:
        return len(self.block)

    def role(self, account: int) -> str:
        return CAMPAIGN if self.campaign[account] else LEGIT


def plan(scenario: Scenario, hours: float, max_requests: int | None = None) -> Traffic:
    """The first `hours` of the scenario (at most `max_requests` of them, the earliest)."""
    if hours <= 0 or hours > scenario.days * 24:
        raise ValueError(f"the window must be between 0 and {scenario.days * 24} hours, not {hours}")
    world, sims = generate.build_world(scenario)
    end = world.start + hours * 3600
    days = int(np.ceil(hours * 3600 / DAY))
    block = Block.concat([sim.day(day) for day in range(days) for sim in sims])
    block = block.take(np.argsort(block.time, kind="stable"))
    keep = np.flatnonzero((block.time < end) & (block.prompt >= 0))
    if max_requests is not None:
        keep = keep[:max_requests]
    campaign = np.zeros(world.registry.accounts, dtype=bool)
    for sim_table in world.registry.tables:
        population = next(p for p in scenario.populations if p.name == sim_table.population)
        campaign[sim_table.first : sim_table.first + len(sim_table)] = isinstance(population, CampaignPopulation)
    return Traffic(world, block.take(keep), campaign, world.start, hours)


@dataclass
class Seeded:
    """The window's accounts in the live registry: real account ids and key plaintexts by simulated index."""

    accounts: dict[int, str] = field(default_factory=dict)
    keys: dict[int, str] = field(default_factory=dict)

    def role_of(self, traffic: Traffic) -> dict[str, str]:
        """Live account id -> legit or campaign (the ground truth, for scoring the live run)."""
        return {live: traffic.role(index) for index, live in self.accounts.items()}


def live_time(scenario_time: float, traffic: Traffic, wall_start: float, speedup: float) -> float:
    if scenario_time < traffic.start:
        return wall_start - (traffic.start - scenario_time)  # the real age at the window's start
    return wall_start + (scenario_time - traffic.start) / speedup


def seed_registry(registry: Registry, traffic: Traffic, *, wall_start: float, speedup: float) -> Seeded:
    """Create the orgs, accounts and keys the window's requests use (one transaction each, not audited: these
    are simulated customers signing up, not admin changes)."""
    sim = traffic.world.registry
    account_table = {i: t for t in sim.tables for i in range(t.first, t.first + len(t))}
    orgs: dict[int, str] = {}
    seeded = Seeded()
    for account in np.unique(traffic.block.account).tolist():
        sim_table = account_table[account]
        local = account - sim_table.first
        org_index = int(sim_table.org[local])
        if org_index not in orgs:
            orgs[org_index] = registry.create_org(sim.org_names[org_index], sim.org_tiers[org_index]).id
        created = registry.create_account(
            orgs[org_index],
            tier=sim_table.tier[local],
            signup_at=live_time(float(sim_table.created[local]), traffic, wall_start, speedup),
            signup_ip=sim_table.signup_ip[local],
            email_domain=sim_table.email_domain[local],
            # the simulated fingerprint stands for the card: accounts sharing a card share it
            payment_method=sim_table.payment_fingerprint[local],
        )
        seeded.accounts[account] = created.id
    key_account = np.concatenate(sim.key_account)
    for key in np.unique(traffic.block.key).tolist():
        seeded.keys[key] = registry.issue_key(seeded.accounts[int(key_account[key])])[1]
    return seeded


@dataclass
class Outcome:
    sent: int = 0
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: {LEGIT: Counter(), CAMPAIGN: Counter()})
    transport_errors: int = 0
    max_lag_s: float = 0.0  # how far behind the compressed schedule the replay fell

    def refused(self, role: str) -> int:
        return sum(n for status, n in self.statuses[role].items() if status in (403, 429))

    def served(self, role: str) -> int:
        return self.statuses[role][200]


def client_for(concurrency: int) -> httpx.AsyncClient:
    """The replay's HTTP client. Idle connections are dropped after 2 s, under the 5 s after which uvicorn (the
    gateway's server) closes them, so that no request goes out on a connection the server is closing."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=2.0)
    return httpx.AsyncClient(timeout=60.0, limits=limits)


async def send(
    traffic: Traffic,
    seeded: Seeded,
    gateway_url: str,
    *,
    wall_start: float,
    speedup: float,
    concurrency: int = 64,
    progress: Progress | None = None,
) -> Outcome:
    """Send every request at its compressed time (or as soon as a slot frees, when the gateway is slower)."""
    block, world = traffic.block, traffic.world
    addresses = network.to_strings(block.ip)
    outcome = Outcome()
    slots = asyncio.Semaphore(concurrency)
    url = gateway_url.rstrip("/") + "/v1/chat/completions"

    async def one(client: httpx.AsyncClient, i: int) -> None:
        headers = {
            "Authorization": f"Bearer {seeded.keys[int(block.key[i])]}",
            "User-Agent": world.user_agents[int(block.ua[i])],
            "X-Forwarded-For": addresses[i],
            "Content-Type": "application/json",
        }
        try:
            body = world.body(int(block.prompt[i]), int(block.profile[i]))
            response = await client.post(url, content=body, headers=headers)
            outcome.statuses[traffic.role(int(block.account[i]))][response.status_code] += 1
        except httpx.HTTPError:
            outcome.transport_errors += 1
        finally:
            slots.release()
            outcome.sent += 1
            if progress is not None:
                progress(outcome.sent, len(block))

    async with client_for(concurrency) as client, asyncio.TaskGroup() as tasks:
        for i in range(len(block)):
            due = live_time(float(block.time[i]), traffic, wall_start, speedup)
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await slots.acquire()
            outcome.max_lag_s = max(outcome.max_lag_s, time.time() - due)
            tasks.create_task(one(client, i))
    return outcome
