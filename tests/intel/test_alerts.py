"""Alert webhooks against a receiver on 127.0.0.1: signatures verify, a 500 is retried with backoff, a growing
campaign is one alert and then updates, the rate limit holds, nothing is sent twice after a restart."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hydraguard.admin import signatures
from hydraguard.config import AlertsConfig
from hydraguard.decide.model import ScopeKind
from hydraguard.detect.campaigns import CampaignStatus, CampaignStore
from hydraguard.detect.engine import Detection
from hydraguard.detect.rules import Action, Hit, Severity
from hydraguard.intel.alerts import AlertConfigError, CampaignAlerter, Webhook, alerter_from_settings
from hydraguard.testing.servers import ThreadedServer

SECRET = b"alert-test-secret"
T0 = 1_700_000_000.0


class Receiver:
    """Records what it receives; answers with the queued statuses first, then 200."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []

        async def hook(request: Request) -> Response:
            self.received.append((dict(request.headers), await request.body()))
            return Response(status_code=self.statuses.pop(0) if self.statuses else 200)

        self.app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])

    def bodies(self) -> list[dict[str, Any]]:
        return [msgspec.json.decode(body) for _, body in self.received]


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    recording = Receiver()
    with ThreadedServer(recording.app) as server:
        yield recording, server.url + "/hook"


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    return sa.create_engine(f"sqlite:///{tmp_path / 'registry.db'}")


class Clock:
    def __init__(self) -> None:
        self.now = T0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def detect(store: CampaignStore, at: float, accounts: tuple[str, ...], subject: str = "cl_1") -> list[str]:
    hit = Hit("hydra-cluster", 1, Severity.HIGH, Action.BLOCK, ScopeKind.GROUP, 86400, False, ("fired",))
    features = {"cluster.accounts": float(len(accounts)), "cluster.hour_entropy": math.nan}
    return store.record([Detection(at, "cluster", subject, accounts, (hit,), features, ("shared payment",))])


def make(engine: sa.Engine, clock: Clock, url: str, **options: Any) -> tuple[CampaignStore, CampaignAlerter]:
    store = CampaignStore(engine)
    alerter = CampaignAlerter(
        store, engine, [Webhook(url)], secret=SECRET, clock=clock, sleep=clock.sleep, timeout=5, **options
    )
    return store, alerter


async def test_the_signature_verifies_with_the_incoming_webhook_scheme(receiver, engine) -> None:
    recording, url = receiver
    clock = Clock()
    store, alerter = make(engine, clock, url)
    sent = await alerter(detect(store, T0, ("a1", "a2")))
    assert [(a.event, a.delivered) for a in sent] == [("campaign.new", True)]
    headers, body = recording.received[0]
    timestamp, signature = signatures.parse(headers["x-hydraguard-timestamp"], headers["x-hydraguard-signature"])
    signatures.verify(SECRET, timestamp, signature, body, now=T0, tolerance=300)
    with pytest.raises(signatures.SignatureError):
        signatures.verify(b"another-secret", timestamp, signature, body, now=T0, tolerance=300)
    alert = msgspec.json.decode(body)
    assert alert["event"] == "campaign.new" and alert["campaign"]["members"] == 2
    assert b"a1" not in body and b"a2" not in body  # a count, never the account ids


async def test_a_500_is_retried_with_exponential_backoff(receiver, engine) -> None:
    recording, url = receiver
    clock = Clock()
    store, alerter = make(engine, clock, url, attempts=4, backoff=0.5)
    recording.statuses = [500, 503]
    sent = await alerter(detect(store, T0, ("a1", "a2")))
    assert [a.delivered for a in sent] == [True]
    assert len(recording.received) == 3 and clock.slept == [0.5, 1.0]
    assert len({body for _, body in recording.received}) == 1  # the same alert, re-signed per attempt

    recording.statuses = [500] * 4  # every attempt fails: kept and sent on a later step
    clock.now += 10_000
    failed = await alerter(detect(store, clock.now, ("a1", "a2", "a3")))
    assert [(a.event, a.delivered) for a in failed] == [("campaign.update", False)]
    assert alerter.pending == {"cl_1"} and len(recording.received) == 7
    later = await alerter([])
    assert [(a.event, a.delivered) for a in later] == [("campaign.update", True)]
    assert alerter.pending == frozenset()


async def test_a_client_error_is_not_retried(receiver, engine) -> None:
    recording, url = receiver
    clock = Clock()
    store, alerter = make(engine, clock, url, attempts=5)
    recording.statuses = [404]
    sent = await alerter(detect(store, T0, ("a1",)))
    assert [a.delivered for a in sent] == [False] and len(recording.received) == 1 and clock.slept == []


async def test_a_growing_campaign_is_one_alert_then_updates(receiver, engine) -> None:
    recording, url = receiver
    clock = Clock()
    store, alerter = make(engine, clock, url, update_interval=600)
    await alerter(detect(store, T0, ("a1", "a2")))
    for step in range(1, 6):  # grows every minute: folded, not one alert per step
        clock.now = T0 + 60 * step
        await alerter(detect(store, clock.now, tuple(f"a{i}" for i in range(1, 3 + step))))
    assert [b["event"] for b in recording.bodies()] == ["campaign.new"]
    assert alerter.pending == {"cl_1"}

    clock.now = T0 + 601
    await alerter([])  # the held-back update goes out once the interval has passed, with everything since
    clock.now = T0 + 700
    await alerter(detect(store, clock.now, tuple(f"a{i}" for i in range(1, 8))))  # nothing new: same members
    bodies = recording.bodies()
    assert [b["event"] for b in bodies] == ["campaign.new", "campaign.update"]
    assert bodies[1]["changes"] == {"members": [2, 7]}

    store.set_status("cl_1", CampaignStatus.CONFIRMED, "analyst")
    clock.now = T0 + 1_300 + alerter.sweep_interval
    await alerter([])  # not touched by detection: found by the sweep of alerted campaigns
    assert recording.bodies()[-1]["changes"] == {"status": ["open", "confirmed"]}

    restarted = CampaignAlerter(store, engine, [Webhook(url)], secret=SECRET, clock=clock, sleep=clock.sleep)
    assert await restarted(["cl_1"]) == []  # already sent: a restart does not alert again
    assert len(recording.received) == 3


async def test_the_rate_limit_holds_across_campaigns(receiver, engine) -> None:
    recording, url = receiver
    clock = Clock()
    store, alerter = make(engine, clock, url, max_per_hour=3)
    touched = [detect(store, T0, (f"x{n}", f"y{n}"), subject=f"cl_{n}")[0] for n in range(5)]
    await alerter(touched)
    assert len(recording.received) == 3 and len(alerter.pending) == 2
    clock.now = T0 + 1_800
    await alerter([])
    assert len(recording.received) == 3  # still within the hour
    clock.now = T0 + 3_601
    await alerter([])
    assert len(recording.received) == 5 and alerter.pending == frozenset()
    assert {b["campaign"]["id"] for b in recording.bodies()} == {f"cl_{n}" for n in range(5)}


async def test_slack_payloads_and_the_score_floor(receiver, engine) -> None:
    recording, url = receiver
    clock = Clock()
    store = CampaignStore(engine)
    alerter = CampaignAlerter(store, engine, [Webhook(url, "slack")], secret=None, clock=clock, sleep=clock.sleep)
    await alerter(detect(store, T0, ("a1", "a2")))
    (message,) = recording.bodies()
    assert set(message) == {"text", "blocks"} and "New model-extraction campaign" in message["text"]
    assert "x-hydraguard-signature" not in recording.received[0][0]  # no secret: Slack does not check one

    picky = CampaignAlerter(
        store, engine, [Webhook(url + "?other")], secret=SECRET, min_score=0.99, clock=clock, sleep=clock.sleep
    )
    assert await picky(["cl_1"]) == [] and picky.pending == frozenset()


def test_configuration(engine, monkeypatch) -> None:
    store = CampaignStore(engine)
    assert alerter_from_settings(AlertsConfig(), store, engine) is None
    config = AlertsConfig(webhooks=[{"url": "http://127.0.0.1:9/hook"}], secret_env="HG_TEST_ALERT_SECRET")
    monkeypatch.delenv("HG_TEST_ALERT_SECRET", raising=False)
    with pytest.raises(AlertConfigError, match="secret"):
        alerter_from_settings(config, store, engine)
    monkeypatch.setenv("HG_TEST_ALERT_SECRET", "s3cret")
    alerter = alerter_from_settings(config, store, engine)
    assert alerter is not None and alerter.webhooks == [Webhook("http://127.0.0.1:9/hook")]
