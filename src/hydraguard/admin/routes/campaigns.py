"""Campaigns: what detection found, and the analyst's verdicts and actions on them (each one audited)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from hydraguard.admin.auth import Analyst, Services, Viewer
from hydraguard.admin.schemas import THIRTY_DAYS, DecisionOut, Id, Text
from hydraguard.decide.model import DecisionType
from hydraguard.detect.campaigns import Campaign, CampaignStatus, TimelineEntry

router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"])
CampaignId = Annotated[Id, Path()]


class CampaignSummary(BaseModel):
    id: str
    level: str
    status: CampaignStatus
    score: float
    enforcing: bool
    first_detected: float
    last_detected: float
    account_count: int
    rules: list[str]

    @classmethod
    def of(cls, campaign: Campaign) -> CampaignSummary:
        return cls(account_count=len(campaign.accounts), **_fields(campaign, cls))


class CampaignOut(CampaignSummary):
    accounts: list[str]
    evidence: list[str]
    indicators: list[tuple[str, str]]
    features: dict[str, float | None]
    decisions: list[DecisionOut] = Field(description="The decisions in force on its group or its accounts.")


class TimelineOut(BaseModel):
    at: float
    kind: str
    actor: str
    detail: dict[str, Any]

    @classmethod
    def of(cls, entry: TimelineEntry) -> TimelineOut:
        return cls(at=entry.at, kind=entry.kind, actor=entry.actor, detail=entry.detail)


class VerdictIn(BaseModel):
    model_config = {"extra": "forbid"}
    note: Annotated[str, Field(max_length=2_000, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]*$")] = ""


class NoteIn(BaseModel):
    model_config = {"extra": "forbid"}
    text: Annotated[str, Field(min_length=1, max_length=2_000, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]+$")]


class EnforceIn(BaseModel):
    model_config = {"extra": "forbid"}
    type: Literal["block", "throttle", "challenge", "degrade"]
    ttl: float | None = Field(default=None, gt=0, le=THIRTY_DAYS, allow_inf_nan=False, description="Seconds.")
    reason: Text | None = None


def _fields(campaign: Campaign, model: type[BaseModel]) -> dict[str, Any]:
    data = campaign.as_json()
    return {k: v for k, v in data.items() if k in model.model_fields and k != "account_count"}


@router.get("")
def list_campaigns(
    admin: Services, _: Viewer, status: Annotated[CampaignStatus | None, Query()] = None
) -> list[CampaignSummary]:
    return [CampaignSummary.of(c) for c in admin.list_campaigns(status)]


@router.get("/{campaign_id}")
async def get_campaign(campaign_id: CampaignId, admin: Services, _: Viewer) -> CampaignOut:
    campaign = admin.get_campaign(campaign_id)
    decisions = admin.decisions_for(await admin.list_decisions(), campaign)
    return CampaignOut(
        account_count=len(campaign.accounts),
        decisions=[DecisionOut.of(d) for d in decisions],
        **_fields(campaign, CampaignOut),
    )


@router.get("/{campaign_id}/timeline")
def timeline(campaign_id: CampaignId, admin: Services, _: Viewer) -> list[TimelineOut]:
    return [TimelineOut.of(e) for e in admin.campaign_timeline(campaign_id)]


@router.post("/{campaign_id}/confirm")
async def confirm(campaign_id: CampaignId, body: VerdictIn, admin: Services, actor: Analyst) -> CampaignSummary:
    return CampaignSummary.of(await admin.set_campaign_status(actor, campaign_id, CampaignStatus.CONFIRMED, body.note))


@router.post("/{campaign_id}/dismiss")
async def dismiss(campaign_id: CampaignId, body: VerdictIn, admin: Services, actor: Analyst) -> CampaignSummary:
    """Not a campaign: lifts its decisions, and detection stops enforcing on it."""
    return CampaignSummary.of(await admin.set_campaign_status(actor, campaign_id, CampaignStatus.DISMISSED, body.note))


@router.post("/{campaign_id}/reopen")
async def reopen(campaign_id: CampaignId, body: VerdictIn, admin: Services, actor: Analyst) -> CampaignSummary:
    return CampaignSummary.of(await admin.set_campaign_status(actor, campaign_id, CampaignStatus.OPEN, body.note))


@router.post("/{campaign_id}/notes", status_code=201)
def add_note(campaign_id: CampaignId, body: NoteIn, admin: Services, actor: Analyst) -> TimelineOut:
    admin.note_campaign(actor, campaign_id, body.text)
    return TimelineOut.of(admin.campaign_timeline(campaign_id)[-1])


@router.post("/{campaign_id}/enforce", status_code=201)
async def enforce(campaign_id: CampaignId, body: EnforceIn, admin: Services, actor: Analyst) -> DecisionOut:
    """Block, throttle, challenge or degrade the whole campaign: its accounts become one group, decided on."""
    decision = await admin.enforce_campaign(
        actor, campaign_id, DecisionType(body.type), ttl=body.ttl, reason=body.reason or ""
    )
    return DecisionOut.of(decision)


@router.post("/{campaign_id}/lift")
async def lift(campaign_id: CampaignId, admin: Services, actor: Analyst) -> list[DecisionOut]:
    """Undo: remove every decision in force on the campaign and dissolve its group."""
    return [DecisionOut.of(d) for d in await admin.lift_campaign(actor, campaign_id)]


@router.get("/{campaign_id}/stix")
def export_stix(campaign_id: CampaignId, admin: Services, _: Viewer) -> dict[str, Any]:
    """The campaign as a STIX 2.1 bundle: indicators and a member count, no account ids, no prompts."""
    return admin.export_campaign(campaign_id)
