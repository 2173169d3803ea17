"""`hydraguard demo`: the whole loop on one machine, in a few minutes, in a temporary directory.

The gateway on the built-in defaults in front of the mock model server, the streaming detection worker and the
admin app with the console, all in this process; then a window of `seed-hydra-small` (the campaign in its
legitimate background) replayed through the gateway, time-compressed. Time compression shrinks the detection
intervals by the same factor, and the per-minute limits are raised by it (a compressed minute of a customer's
traffic arrives in a fraction of a second and would otherwise trip them).
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from hydraguard.accounts.risk import signup_links
from hydraguard.admin.app import build_admin_app, open_services
from hydraguard.admin.audit import Actor
from hydraguard.admin.tokens import Role
from hydraguard.config import Settings
from hydraguard.console import traffic
from hydraguard.decide.policy import Policy
from hydraguard.detect.campaigns import CampaignStore
from hydraguard.detect.engine import Engine, EngineSettings
from hydraguard.detect.worker import DetectionWorker, EventFollower
from hydraguard.gateway.build import build_decision_store, build_gateway, open_registry
from hydraguard.sim import replay
from hydraguard.sim import scenario as scenarios
from hydraguard.sim.upstream import create_app as mock_upstream
from hydraguard.testing.servers import ThreadedServer

Say = Callable[[str], None]


@dataclass(frozen=True)
class Summary:
    campaign_found: bool
    campaign_id: str | None
    accounts_found: int  # campaign accounts among the campaign's members
    members: int
    campaign_accounts: int  # campaign accounts that sent requests in the window
    time_to_containment_s: float | None  # scenario seconds from the campaign's first request
    tokens_before_containment: int
    campaign_requests: int
    legit_requests: int
    legit_refused: int
    transport_errors: int
    max_lag_s: float

    @property
    def ok(self) -> bool:
        return self.campaign_found and self.transport_errors == 0


def demo_settings(root: Path, speedup: float) -> Settings:
    """The embedded defaults, on a temporary directory, with per-minute limits scaled to the compression."""

    class Embedded(Settings):
        toml_path: ClassVar[str] = str(root / "no-config-file.toml")  # the built-in defaults, whatever ./ holds

    base = Embedded(server={"secret": secrets.token_urlsafe(32)})
    tiers: dict[str, Any] = {}
    for name, tier in base.tiers.items():
        tiers[name] = tier.model_dump()
        for scope in ("account", "key", "org"):
            tiers[name][scope] = _scaled(tier.model_dump()[scope], speedup)
    limits = base.limits.model_dump()
    for scope in ("ip", "subnet", "group"):
        limits[scope] = _scaled(limits[scope], speedup)
    return Embedded(
        server={"secret": base.server.secret, "trusted_proxies": ["127.0.0.1/32"]},
        registry={"url": f"sqlite:///{root / 'registry.db'}"},
        events={"dir": str(root / "events"), "flush_interval": 0.25, "keep_prompt_text": True},
        limits=limits,
        tiers=tiers,
        logging={"level": "WARNING", "json_format": False},
    )


def _scaled(limits: dict[str, Any], speedup: float) -> dict[str, Any]:
    return {k: int(v * speedup) if v is not None and k in ("rpm", "tpm") else v for k, v in limits.items()}


class _Worker:
    """The detection worker on its own thread and event loop, stepping every `poll` seconds."""

    def __init__(self, settings: Settings, speedup: float, poll: float = 0.5) -> None:
        self.registry = open_registry(settings)
        self.decisions = build_decision_store(settings, self.registry)
        campaigns = CampaignStore(self.registry.engine)
        interval = 3600.0 / speedup
        engine = Engine(settings=EngineSettings(analysis_interval=interval, linkage_interval=interval))
        self.worker = DetectionWorker(
            engine,
            EventFollower(settings.events.dir),
            campaigns,
            Policy(dismissed=campaigns.dismissed),
            self.decisions,
            self.registry.list_accounts,
            signups=partial(signup_links, self.registry.engine),
        )
        self.poll = poll
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            await self.decisions.start()
            stop = asyncio.Event()
            task = asyncio.create_task(self.worker.run(self.poll, stop))
            while not self._stop.is_set():
                await asyncio.sleep(0.1)
            stop.set()
            await task
            await self.decisions.close()

        asyncio.run(main())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.registry.close()


@contextmanager
def running(settings: Settings, speedup: float) -> Iterator[tuple[str, str, str]]:
    """Mock upstream, gateway, detection and admin app; yields (gateway URL, console URL, admin token)."""
    upstream = ThreadedServer(mock_upstream()).start()
    settings.server.upstream = upstream.url + "/v1"
    gateway_app = build_gateway(settings)
    gateway = ThreadedServer(gateway_app).start()
    worker = _Worker(settings, speedup)
    worker.start()
    services = open_services(settings)
    _, token = services.create_token(Actor("cli:demo"), "demo-analyst", Role.ANALYST)
    services.registry.close()
    admin = ThreadedServer(build_admin_app(settings)).start()
    try:
        yield gateway.url, admin.url + "/console", token
    finally:
        admin.stop()
        worker.stop()
        gateway.stop()
        upstream.stop()


def run(
    *,
    hours: float,
    speedup: float,
    say: Say,
    progress: replay.Progress | None = None,
    scenario_name: str = "seed-hydra-small",
    stay: Callable[[], None] | None = None,
) -> Summary:
    """The demo, start to end; `stay` (if given) is called with everything still running, before cleaning up."""
    root = Path(tempfile.mkdtemp(prefix="hydraguard-demo-"))
    try:
        scenario = scenarios.load(scenario_name)[0]
        say(f"simulating the first {hours:g} h of {scenario.name} ({scenario.days} days in all) ...")
        window = replay.plan(scenario, hours)
        settings = demo_settings(root, speedup)
        with running(settings, speedup) as (gateway_url, console_url, token):
            say(f"gateway {gateway_url}   console {console_url}   admin token (analyst): {token}")
            registry = open_registry(settings)
            wall_start = time.time() + 2.0
            seeded = replay.seed_registry(registry, window, wall_start=wall_start, speedup=speedup)
            registry.close()
            roles = seeded.role_of(window)
            campaign_accounts = sum(1 for r in roles.values() if r == replay.CAMPAIGN)
            say(
                f"replaying {len(window):,} requests of {len(roles):,} accounts ({campaign_accounts} in the "
                f"campaign) at {speedup:g}x: {hours:g} scenario hours in {hours * 3600 / speedup:.0f} s"
            )
            wall_start = max(wall_start, time.time())
            outcome = asyncio.run(
                replay.send(window, seeded, gateway_url, wall_start=wall_start, speedup=speedup, progress=progress)
            )
            time.sleep(2 * settings.events.flush_interval + 1.5)  # the last events flushed and analysed
            summary = summarize(settings, roles, outcome, speedup)
            if stay is not None:
                stay()
        return summary
    finally:
        shutil.rmtree(root, ignore_errors=True)


def summarize(settings: Settings, roles: dict[str, str], outcome: replay.Outcome, speedup: float) -> Summary:
    """The run scored against the scenario's ground truth, from the gateway's own event log and campaigns."""
    registry = open_registry(settings)
    try:
        found = CampaignStore(registry.engine).list()
    finally:
        registry.close()
    truth = {a for a, r in roles.items() if r == replay.CAMPAIGN}
    best = max(found, key=lambda c: len(truth & set(c.accounts)), default=None)
    caught = best is not None and len(truth & set(best.accounts)) * 2 > len(best.accounts)
    events = traffic.read(settings.events.dir)
    accounts = events["account_id"].to_pylist()
    is_campaign = np.array([a in truth for a in accounts], dtype=bool)
    status = events["status"].to_numpy()
    acted = np.array([d is not None for d in events["decision_type"].to_pylist()], dtype=bool)
    held = traffic.containment(events.filter(is_campaign))
    to_containment = None
    if held.contained_at is not None and held.first_request is not None:
        to_containment = (held.contained_at - held.first_request) * speedup
    return Summary(
        campaign_found=caught,
        campaign_id=best.id if caught and best is not None else None,
        accounts_found=len(truth & set(best.accounts)) if caught and best is not None else 0,
        members=len(best.accounts) if caught and best is not None else 0,
        campaign_accounts=len(truth),
        time_to_containment_s=to_containment,
        tokens_before_containment=held.tokens_before,
        campaign_requests=int(is_campaign.sum()),
        legit_requests=int((~is_campaign).sum()),
        legit_refused=int(((status != 200) & acted & ~is_campaign).sum()),
        transport_errors=outcome.transport_errors,
        max_lag_s=outcome.max_lag_s,
    )
