"""Alert webhooks for detected campaigns: one alert per campaign, then updates, never a storm.

The detection worker hands over the campaigns each step touched (`DetectionWorker(on_campaigns=...)`). Per
webhook, a campaign raises one `campaign.new` alert, then a `campaign.update` only when it grew or its score or
status changed, at most one per `update_interval` seconds (changes in between are folded into the next one),
and a webhook gets at most `max_per_hour` alerts; what is held back is sent on a later step. What was last sent
is kept in the registry database (`intel_alerts`), so a restarted worker does not alert again. Campaigns already
alerted are re-checked every `sweep_interval` seconds, so an analyst's status change is sent as well.

Payloads are generic JSON or Slack-compatible (`text` and a section block). Each is signed with HMAC-SHA256 over
`<timestamp>.<body>`: headers `X-Hydraguard-Timestamp` and `X-Hydraguard-Signature: sha256=<hex>`, the scheme
of hydraguard's incoming webhooks (`admin/signatures.py`). A delivery is retried with exponential backoff on
connection errors, timeouts, 429 and 5xx answers; other 4xx answers are not retried. Account ids never leave:
an alert carries the member count.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
import sqlalchemy as sa

from hydraguard.config import AlertsConfig
from hydraguard.detect.campaigns import Campaign, CampaignNotFound, CampaignStore
from hydraguard.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from hydraguard.store.migrate import ensure_schema

log = logging.getLogger(__name__)

_RETRIED = frozenset({408, 425, 429})

metadata = sa.MetaData()
alerts_sent = sa.Table(
    "intel_alerts",
    metadata,
    sa.Column("webhook", sa.String(32), primary_key=True),  # a hash of the URL, never the URL (it may hold a token)
    sa.Column("campaign_id", sa.String(64), primary_key=True),
    sa.Column("members", sa.Integer, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("sent_at", sa.Float, nullable=False),
)


class AlertConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Webhook:
    url: str
    kind: str = "json"  # json | slack

    @property
    def key(self) -> str:
        return hashlib.sha256(self.url.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CampaignState:
    members: int
    score: float
    status: str

    @classmethod
    def of(cls, campaign: Campaign) -> CampaignState:
        return cls(len(campaign.accounts), round(campaign.score, 4), str(campaign.status))


@dataclass(frozen=True)
class Alert:
    webhook: Webhook
    campaign_id: str
    event: str  # campaign.new | campaign.update
    delivered: bool


def payload(campaign: Campaign, event: str, before: CampaignState | None, webhook_kind: str, now: float) -> bytes:
    state = CampaignState.of(campaign)
    changes = (
        {
            name: [getattr(before, name), getattr(state, name)]
            for name in ("members", "score", "status")
            if getattr(before, name) != getattr(state, name)
        }
        if before is not None
        else {}
    )
    if webhook_kind == "slack":
        return msgspec.json.encode(_slack(campaign, event, changes))
    body = {
        "event": event,
        "sent_at": now,
        "campaign": {
            "id": campaign.id,
            "level": campaign.level,
            "status": str(campaign.status),
            "score": campaign.score,
            "members": len(campaign.accounts),
            "enforcing": campaign.enforcing,
            "first_detected": campaign.first_detected,
            "last_detected": campaign.last_detected,
            "rules": list(campaign.rules),
            "evidence": list(campaign.evidence),
        },
        "changes": changes,
    }
    return msgspec.json.encode(body)


def _slack(campaign: Campaign, event: str, changes: dict[str, list[Any]]) -> dict[str, Any]:
    title = "New model-extraction campaign" if event == "campaign.new" else "Campaign update"
    summary = (
        f"*{title}* `{campaign.id}`: {len(campaign.accounts)} accounts, score {campaign.score:.2f}, "
        f"{campaign.status}; rules: {', '.join(campaign.rules) or 'none'}"
    )
    if changes:
        summary += "\nChanged: " + "; ".join(f"{k} {old} → {new}" for k, (old, new) in changes.items())
    return {"text": summary, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": summary}}]}


class CampaignAlerter:
    def __init__(
        self,
        campaigns: CampaignStore,
        engine: sa.Engine,
        webhooks: Iterable[Webhook],
        *,
        secret: bytes | None,
        min_score: float = 0.0,
        update_interval: float = 900.0,
        max_per_hour: int = 30,
        attempts: int = 5,
        backoff: float = 1.0,
        timeout: float = 10.0,
        sweep_interval: float = 60.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.webhooks = list(webhooks)
        if secret is None and any(w.kind == "json" for w in self.webhooks):
            raise AlertConfigError("JSON alert webhooks are signed: give a secret (`[alerts] secret_env`)")
        self._campaigns = campaigns
        self._engine = engine
        self._secret = secret
        self.min_score = min_score
        self.update_interval = update_interval
        self.max_per_hour = max_per_hour
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self.sweep_interval = sweep_interval
        self._clock = clock
        self._sleep = sleep
        self._pending: set[str] = set()
        self._recent: dict[str, deque[float]] = {w.key: deque() for w in self.webhooks}
        self._last_sweep = clock()
        ensure_schema(engine)

    @property
    def pending(self) -> frozenset[str]:
        """Campaigns with an alert held back (rate limit, update interval, a failed delivery)."""
        return frozenset(self._pending)

    async def __call__(self, touched: Iterable[str]) -> list[Alert]:
        """The worker's hook: consider the campaigns a step touched, and those held back before."""
        now = self._clock()
        self._pending.update(touched)
        if now - self._last_sweep >= self.sweep_interval:
            self._last_sweep = now
            self._pending.update(self._alerted())
        if not self._pending or not self.webhooks:
            self._pending.clear()
            return []
        sent: list[Alert] = []
        failing: set[str] = set()  # webhooks that failed this round are not tried again until the next
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session:
            for campaign_id in sorted(self._pending):
                try:
                    campaign = self._campaigns.get(campaign_id)
                except CampaignNotFound:
                    self._pending.discard(campaign_id)
                    continue
                done, alerts = await self._consider(session, campaign, now, failing)
                sent += alerts
                if done:
                    self._pending.discard(campaign_id)
        return sent

    async def _consider(
        self, session: aiohttp.ClientSession, campaign: Campaign, now: float, failing: set[str]
    ) -> tuple[bool, list[Alert]]:
        """Alert each webhook that is due one; whether nothing is left to send about this campaign."""
        if campaign.score < self.min_score:
            return True, []
        state = CampaignState.of(campaign)
        last = self._last_sent(campaign.id)
        done = True
        alerts = []
        for webhook in self.webhooks:
            before = last.get(webhook.key)
            if before is not None and before[0] == state:
                continue
            if before is not None and now - before[1] < self.update_interval:
                done = False  # folded into the next update
                continue
            if webhook.key in failing or not self._allow(webhook, now):
                done = False
                continue
            event = "campaign.new" if before is None else "campaign.update"
            body = payload(campaign, event, before[0] if before else None, webhook.kind, now)
            delivered = await self._deliver(session, webhook, body)
            alerts.append(Alert(webhook, campaign.id, event, delivered))
            if delivered:
                self._record(webhook, campaign.id, state, now)
            else:
                failing.add(webhook.key)
                done = False
        return done, alerts

    def _allow(self, webhook: Webhook, now: float) -> bool:
        recent = self._recent[webhook.key]
        while recent and recent[0] <= now - 3_600.0:
            recent.popleft()
        if len(recent) >= self.max_per_hour:
            return False
        recent.append(now)
        return True

    async def _deliver(self, session: aiohttp.ClientSession, webhook: Webhook, body: bytes) -> bool:
        for attempt in range(self.attempts):
            if attempt:
                await self._sleep(self.backoff * 2 ** (attempt - 1))
            timestamp = int(self._clock())
            headers = {"content-type": "application/json", TIMESTAMP_HEADER: str(timestamp)}
            if self._secret is not None:
                headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
            try:
                async with session.post(webhook.url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status < 300:
                        return True
                    reason = f"HTTP {response.status}"
                    if response.status < 500 and response.status not in _RETRIED:
                        break
            except (TimeoutError, aiohttp.ClientError) as exc:
                reason = type(exc).__name__
            log.warning("alert webhook %s: attempt %d failed (%s)", webhook.key, attempt + 1, reason)
        log.error("alert webhook %s: not delivered; kept for a later step", webhook.key)
        return False

    # -- what was sent ------------------------------------------------------------------------------------
    def _last_sent(self, campaign_id: str) -> dict[str, tuple[CampaignState, float]]:
        query = sa.select(alerts_sent).where(alerts_sent.c.campaign_id == campaign_id)
        with self._engine.connect() as conn:
            return {
                row.webhook: (CampaignState(row.members, row.score, row.status), row.sent_at)
                for row in conn.execute(query)
            }

    def _record(self, webhook: Webhook, campaign_id: str, state: CampaignState, now: float) -> None:
        values = {"members": state.members, "score": state.score, "status": state.status, "sent_at": now}
        key = (alerts_sent.c.webhook == webhook.key) & (alerts_sent.c.campaign_id == campaign_id)
        with self._engine.begin() as conn:
            if conn.execute(alerts_sent.update().where(key).values(values)).rowcount == 0:
                conn.execute(alerts_sent.insert().values(webhook=webhook.key, campaign_id=campaign_id, **values))

    def _alerted(self) -> set[str]:
        with self._engine.connect() as conn:
            return set(conn.execute(sa.select(alerts_sent.c.campaign_id).distinct()).scalars())


def alerter_from_settings(config: AlertsConfig, campaigns: CampaignStore, engine: sa.Engine) -> CampaignAlerter | None:
    """The configured alerter, or None without webhooks; AlertConfigError when the secret is missing."""
    if not config.webhooks:
        return None
    secret = os.environ.get(config.secret_env)
    return CampaignAlerter(
        campaigns,
        engine,
        [Webhook(w.url, w.kind) for w in config.webhooks],
        secret=secret.encode() if secret else None,
        min_score=config.min_score,
        update_interval=config.update_interval,
        max_per_hour=config.max_per_hour,
        attempts=config.attempts,
        backoff=config.backoff,
        timeout=config.timeout,
    )
