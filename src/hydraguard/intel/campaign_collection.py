"""The TAXII collection of hydraguard's own campaigns: confirmed ones (and, if configured, open ones scoring at
least a threshold), each as the STIX 2.1 bundle of `export.campaign_bundle`, read from the CampaignStore.

A campaign's objects are dated by its last change (its last detection or timeline entry), and that date is also
their `modified`: an unchanged campaign is the same object versions on every request, and a campaign that grows
or changes status is added again, later, as new versions of the same objects, so `added_after` polling sees it.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
import sqlalchemy as sa

from hydraguard.detect.campaigns import Campaign, CampaignStatus, CampaignStore, campaign_timeline
from hydraguard.intel.export import CampaignReport, campaign_bundle
from hydraguard.intel.indicators import IndicatorError, IndicatorKind, normalize
from hydraguard.intel.taxii import Entry, collection_info

# linkage evidence kinds (`detect.linkage.Evidence`) that are shareable indicators; template band keys are
# single LSH bands, not whole signatures, and are not exported
EVIDENCE_KINDS = {
    "payment": IndicatorKind.PAYMENT_FINGERPRINT,
    "signup_subnet": IndicatorKind.IP,
    "client_subnet": IndicatorKind.IP,
    "email_domain": IndicatorKind.EMAIL_DOMAIN,
}
CONFIRMED_CONFIDENCE = 85
OPEN_CONFIDENCE = 50
_CACHE_SIZE = 4_096


def public_name(campaign_id: str) -> str:
    """A campaign's name outside: a hash, since a lone account's campaign is named by its account id."""
    return "hydraguard-" + hashlib.sha256(campaign_id.encode()).hexdigest()[:16]


def campaign_report(campaign: Campaign) -> CampaignReport:
    """What may be shared of a campaign: evidence values that are valid indicators, counts, rules; no account ids."""
    indicators = []
    for evidence, value in campaign.indicators:
        kind = EVIDENCE_KINDS.get(evidence)
        if kind is None:
            continue
        try:
            indicators.append((kind, normalize(kind, value)))
        except IndicatorError:  # e.g. a subnet wider than an indicator may be: not worth sharing
            continue
    name = public_name(campaign.id)
    return CampaignReport(
        id=name,
        name=name,
        first_seen=campaign.first_detected,
        last_seen=campaign.last_detected,
        member_count=len(campaign.accounts),
        indicators=tuple(indicators),
        rules=campaign.rules,
        score=campaign.score,
        confidence=CONFIRMED_CONFIDENCE if campaign.status is CampaignStatus.CONFIRMED else OPEN_CONFIDENCE,
    )


class CampaignCollection:
    def __init__(
        self,
        store: CampaignStore,
        engine: sa.Engine,
        *,
        collection_id: str = "campaigns",
        producer: str = "hydraguard",
        open_min_score: float | None = None,
    ) -> None:
        self._store = store
        self._engine = engine
        self._id = collection_id
        self.producer = producer
        self.open_min_score = open_min_score
        self._bundles: dict[tuple[object, ...], list[dict[str, Any]]] = {}

    @property
    def id(self) -> str:
        return self._id

    def info(self) -> dict[str, Any]:
        served = "confirmed campaigns"
        if self.open_min_score is not None:
            served += f" and open ones scoring at least {self.open_min_score:g}"
        return collection_info(self._id, "hydraguard campaigns", f"Model-extraction {served}, as STIX 2.1.")

    def served(self, campaign: Campaign) -> bool:
        if campaign.status is CampaignStatus.CONFIRMED:
            return True
        return (
            campaign.status is CampaignStatus.OPEN
            and self.open_min_score is not None
            and campaign.score >= self.open_min_score
        )

    def entries(self) -> list[Entry]:
        campaigns = [c for c in self._store.list() if self.served(c)]
        changed = self._last_changes([c.id for c in campaigns])
        entries: list[Entry] = []
        for campaign in campaigns:
            at = round(max(campaign.last_detected, changed.get(campaign.id, 0.0)) * 1e6) / 1e6
            entries += [(at, obj) for obj in self._objects(campaign, at)]
        entries.sort(key=lambda e: e[0])  # stable: a campaign's objects stay in bundle order
        return entries

    def page(self, added_after: float | None, start: int, limit: int) -> tuple[list[Entry], bool]:
        # compared in whole microseconds, the precision of TAXII timestamps: a client's bookmark (the last date it
        # received, as text) must not bring back the objects it was the date of
        after = None if added_after is None else round(added_after * 1e6)
        entries = [e for e in self.entries() if after is None or round(e[0] * 1e6) > after]
        return entries[start : start + limit], start + limit < len(entries)

    def _objects(self, campaign: Campaign, at: float) -> list[dict[str, Any]]:
        key = (campaign.id, at, campaign.status, campaign.score, len(campaign.accounts), campaign.indicators)
        objects = self._bundles.get(key)
        if objects is None:
            if len(self._bundles) >= _CACHE_SIZE:
                self._bundles.clear()
            bundle = campaign_bundle(campaign_report(campaign), producer=self.producer, now=at)
            objects = self._bundles[key] = msgspec.json.decode(bundle.serialize())["objects"]
        return objects

    def _last_changes(self, ids: list[str]) -> dict[str, float]:
        """The time of each campaign's latest timeline entry (a status change, a note, growth)."""
        if not ids:
            return {}
        query = (
            sa.select(campaign_timeline.c.campaign_id, sa.func.max(campaign_timeline.c.at))
            .where(campaign_timeline.c.campaign_id.in_(ids))
            .group_by(campaign_timeline.c.campaign_id)
        )
        with self._engine.connect() as conn:
            return {campaign_id: at for campaign_id, at in conn.execute(query)}
