"""Campaigns: what detection found, kept for analysts (members, evidence, timeline, status, notes).

A campaign is the detections of one subject (a cluster of linked accounts, or one account acting alone) over time.
`record` folds detections in: the first creates the campaign, later ones grow its members, raise its score and
extend its timeline. Analysts confirm or dismiss a campaign (with a note); a dismissed subject is no longer
enforced (`decide.policy.Policy(dismissed=store.dismissed)`), and the confirmed/dismissed counts per rule are the
calibration signal (`calibration`). Stored in the registry's database (SQLite by default, PostgreSQL in
production), so the batch analyzer, the streaming worker and the admin API read the same campaigns.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from hydraguard.detect.engine import Detection
from hydraguard.detect.rules import FeatureValue
from hydraguard.store.migrate import ensure_schema

DISMISSED_REFRESH = 5.0  # seconds
KEPT_TEMPLATES = 5  # sample templates a campaign keeps
metadata = sa.MetaData()
campaigns = sa.Table(
    "campaigns",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("enforcing", sa.Boolean, nullable=False),
    sa.Column("first_detected", sa.Float, nullable=False),
    sa.Column("last_detected", sa.Float, nullable=False),
    sa.Column("rules", sa.JSON, nullable=False),
    sa.Column("evidence", sa.JSON, nullable=False),
    sa.Column("indicators", sa.JSON, nullable=False),
    sa.Column("features", sa.JSON, nullable=False),
    # sample templates: [{template_hash, requests, example_request_id}], most requests first
    sa.Column("templates", sa.JSON, nullable=True),
)
campaign_members = sa.Table(
    "campaign_members",
    metadata,
    sa.Column("campaign_id", sa.String(64), sa.ForeignKey("campaigns.id"), primary_key=True),
    sa.Column("account_id", sa.String(64), primary_key=True),
    sa.Column("joined_at", sa.Float, nullable=False),
)
campaign_timeline = sa.Table(
    "campaign_timeline",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("campaign_id", sa.String(64), sa.ForeignKey("campaigns.id"), nullable=False, index=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # detected, grew, rule, status, note
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("detail", sa.JSON, nullable=False),
)


class CampaignStatus(enum.StrEnum):
    OPEN = "open"
    CONFIRMED = "confirmed"
    DISMISSED = "dismissed"


class CampaignNotFound(KeyError):
    pass


@dataclass(frozen=True)
class Campaign:
    id: str
    level: str
    status: CampaignStatus
    score: float
    enforcing: bool
    first_detected: float
    last_detected: float
    accounts: tuple[str, ...]
    rules: tuple[str, ...]
    evidence: tuple[str, ...]
    indicators: tuple[tuple[str, str], ...]
    features: dict[str, FeatureValue]
    templates: tuple[dict[str, object], ...] = ()  # {template_hash, requests, example_request_id}

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "level": self.level,
            "status": str(self.status),
            "score": self.score,
            "enforcing": self.enforcing,
            "first_detected": self.first_detected,
            "last_detected": self.last_detected,
            "accounts": list(self.accounts),
            "rules": list(self.rules),
            "evidence": list(self.evidence),
            "indicators": [list(i) for i in self.indicators],
            "features": self.features,
            "templates": list(self.templates),
        }


@dataclass(frozen=True)
class TimelineEntry:
    at: float
    kind: str
    actor: str
    detail: dict[str, object]


class CampaignStore:
    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        ensure_schema(engine)
        self._dismissed: set[str] = set()
        self._dismissed_read = -math.inf
        self._reload_dismissed()

    def _reload_dismissed(self) -> None:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(campaigns.c.id).where(campaigns.c.status == CampaignStatus.DISMISSED))
            self._dismissed = {r.id for r in rows}
        self._dismissed_read = time.monotonic()

    # -- detection side ------------------------------------------------------------------------------
    def record(self, detections: Iterable[Detection], actor: str = "detect") -> list[str]:
        """Fold detections in (one transaction); returns the ids of the campaigns they touched."""
        by_subject: dict[str, list[Detection]] = {}
        for detection in sorted(detections, key=lambda d: d.at):
            by_subject.setdefault(detection.subject, []).append(detection)
        if not by_subject:
            return []
        with self._engine.begin() as conn:
            existing = {
                r.id: r
                for chunk in _chunks(list(by_subject))
                for r in conn.execute(sa.select(campaigns).where(campaigns.c.id.in_(chunk)))
            }
            known = _members(conn, list(by_subject))
            for subject, found in by_subject.items():
                self._fold(conn, subject, found, existing.get(subject), known.get(subject, set()), actor)
        return list(by_subject)

    def _fold(
        self,
        conn: sa.Connection,
        subject: str,
        found: list[Detection],
        row: sa.Row | None,
        members: set[str],
        actor: str,
    ) -> None:
        last = found[-1]
        rules = set(row.rules) if row else set()
        timeline: list[dict[str, object]] = []
        if row is None:
            first = found[0]
            conn.execute(
                campaigns.insert().values(
                    id=subject,
                    level=first.level,
                    status=CampaignStatus.OPEN,
                    score=first.score,
                    enforcing=first.enforcing,
                    first_detected=first.at,
                    last_detected=first.at,
                    rules=[],
                    evidence=[],
                    indicators=[],
                    features={},
                )
            )
            timeline.append(_entry(subject, first.at, "detected", actor, {"level": first.level}))
        for detection in found:
            new_members = sorted(set(detection.accounts) - members)
            if new_members:
                conn.execute(
                    campaign_members.insert(),
                    [{"campaign_id": subject, "account_id": a, "joined_at": detection.at} for a in new_members],
                )
                members.update(new_members)
                if row is not None or detection is not found[0]:
                    detail = {"added": len(new_members), "accounts": len(members), "sample": new_members[:10]}
                    timeline.append(_entry(subject, detection.at, "grew", actor, detail))
            for hit in detection.hits:
                if hit.rule_id not in rules:
                    rules.add(hit.rule_id)
                    detail = {"rule": hit.rule_id, "version": hit.version, "action": str(hit.action)}
                    timeline.append(_entry(subject, detection.at, "rule", actor, {**detail, "reasons": hit.reasons}))
        values = {
            "score": max([d.score for d in found] + ([row.score] if row else [])),
            "enforcing": any(d.enforcing for d in found) or bool(row and row.enforcing),
            "last_detected": last.at,
            "rules": sorted(rules),
            "evidence": list(last.evidence or (row.evidence if row else ())),
            "indicators": [list(i) for i in last.indicators] or (row.indicators if row else []),
            "features": _finite(last.features),
            "templates": _merged_templates(row.templates if row else None, found),
        }
        conn.execute(campaigns.update().where(campaigns.c.id == subject).values(**values))
        if timeline:
            conn.execute(campaign_timeline.insert(), timeline)

    def dismissed(self, subject: str) -> bool:
        """Whether analysts dismissed the subject's campaign; re-read every `DISMISSED_REFRESH` seconds, so a
        dismissal made through the admin API reaches a running detection worker."""
        if time.monotonic() - self._dismissed_read > DISMISSED_REFRESH:
            self._reload_dismissed()
        return subject in self._dismissed

    # -- analyst side --------------------------------------------------------------------------------
    def set_status(self, campaign_id: str, status: CampaignStatus, actor: str, note: str = "") -> Campaign:
        with self._engine.begin() as conn:
            before = self._get(conn, campaign_id)
            conn.execute(campaigns.update().where(campaigns.c.id == campaign_id).values(status=status))
            detail = {"from": str(before.status), "to": str(status), "note": note}
            conn.execute(campaign_timeline.insert(), [_entry(campaign_id, time.time(), "status", actor, detail)])
        if status is CampaignStatus.DISMISSED:
            self._dismissed.add(campaign_id)
        else:
            self._dismissed.discard(campaign_id)
        return self.get(campaign_id)

    def add_note(self, campaign_id: str, actor: str, text: str) -> None:
        if not text.strip():
            raise ValueError("a note needs some text")
        with self._engine.begin() as conn:
            self._get(conn, campaign_id)
            conn.execute(campaign_timeline.insert(), [_entry(campaign_id, time.time(), "note", actor, {"text": text})])

    # -- reads ---------------------------------------------------------------------------------------
    def get(self, campaign_id: str) -> Campaign:
        with self._engine.connect() as conn:
            return self._get(conn, campaign_id)

    def _get(self, conn: sa.Connection, campaign_id: str) -> Campaign:
        row = conn.execute(sa.select(campaigns).where(campaigns.c.id == campaign_id)).first()
        if row is None:
            raise CampaignNotFound(campaign_id)
        return _campaign(row, sorted(_members(conn, [campaign_id]).get(campaign_id, ())))

    def list(self, status: CampaignStatus | None = None) -> list[Campaign]:
        """Campaigns by score, then size, highest first."""
        query = sa.select(campaigns)
        if status is not None:
            query = query.where(campaigns.c.status == status)
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
            members = _members(conn, [r.id for r in rows])
        found = [_campaign(r, sorted(members.get(r.id, ()))) for r in rows]
        return sorted(found, key=lambda c: (-c.score, -len(c.accounts), c.id))

    def timeline(self, campaign_id: str) -> list[TimelineEntry]:
        query = (
            sa.select(campaign_timeline)
            .where(campaign_timeline.c.campaign_id == campaign_id)
            .order_by(campaign_timeline.c.at, campaign_timeline.c.seq)
        )
        with self._engine.connect() as conn:
            return [TimelineEntry(r.at, r.kind, r.actor, r.detail) for r in conn.execute(query)]

    def calibration(self) -> dict[str, dict[str, int]]:
        """Per rule: how many campaigns it fired on are open, confirmed and dismissed (analysts' verdicts)."""
        counts: dict[str, dict[str, int]] = {}
        with self._engine.connect() as conn:
            for row in conn.execute(sa.select(campaigns.c.rules, campaigns.c.status)):
                for rule in row.rules:
                    per_rule = counts.setdefault(rule, {str(s): 0 for s in CampaignStatus})
                    per_rule[row.status] += 1
        return counts


def _entry(campaign_id: str, at: float, kind: str, actor: str, detail: dict[str, object]) -> dict[str, object]:
    return {"campaign_id": campaign_id, "at": at, "kind": kind, "actor": actor, "detail": detail}


def _members(conn: sa.Connection, ids: list[str]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for chunk in _chunks(ids):
        query = sa.select(campaign_members.c.campaign_id, campaign_members.c.account_id).where(
            campaign_members.c.campaign_id.in_(chunk)
        )
        for row in conn.execute(query):
            found.setdefault(row.campaign_id, set()).add(row.account_id)
    return found


def _chunks(ids: list[str], size: int = 500) -> Iterator[list[str]]:
    # SQLite limits the number of bound parameters of one statement
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _merged_templates(kept: list[dict[str, Any]] | None, found: list[Detection]) -> list[dict[str, Any]]:
    """A campaign's sample templates with those its new detections sampled: requests summed per template, the
    latest example kept, the `KEPT_TEMPLATES` with the most requests (ties: the template met first)."""
    merged = {str(t["template_hash"]): dict(t) for t in kept or []}
    for detection in found:
        for sample in detection.templates:
            entry = merged.setdefault(sample.template_hash, {"template_hash": sample.template_hash, "requests": 0})
            entry["requests"] = int(entry["requests"]) + sample.requests
            entry["example_request_id"] = sample.example_request_id
    ranked = sorted(merged.values(), key=lambda t: -int(t["requests"]))
    return ranked[:KEPT_TEMPLATES]


def _finite(features: dict[str, FeatureValue]) -> dict[str, FeatureValue]:
    # JSON (and PostgreSQL's json type) has no Infinity or NaN: an undefined feature is stored as null
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in features.items()}


def _campaign(row: sa.Row, accounts: list[str]) -> Campaign:
    return Campaign(
        id=row.id,
        level=row.level,
        status=CampaignStatus(row.status),
        score=row.score,
        enforcing=row.enforcing,
        first_detected=row.first_detected,
        last_detected=row.last_detected,
        accounts=tuple(accounts),
        rules=tuple(row.rules),
        evidence=tuple(row.evidence),
        indicators=tuple((k, v) for k, v in row.indicators),
        features=dict(row.features),
        templates=tuple(row.templates or ()),
    )
