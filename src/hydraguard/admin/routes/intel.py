"""Threat intel in the admin API: indicators (read: viewer; add, remove, import a feed: analyst), and the TAXII 2.1
server of campaigns mounted at /taxii2/ behind the same admin tokens (viewer)."""

from __future__ import annotations

import time
from typing import Annotated

import msgspec
from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from hydraguard.admin.auth import Analyst, Services, Viewer
from hydraguard.admin.schemas import TEN_YEARS, Id, Text, _In, _Out
from hydraguard.admin.services import AdminServices
from hydraguard.admin.tokens import Role
from hydraguard.intel.feeds import FeedFormat
from hydraguard.intel.indicators import MAX_DESCRIPTION_CHARS, MAX_VALUE_CHARS, IndicatorKind
from hydraguard.intel.taxii import TAXII_MEDIA_TYPE, taxii_app

router = APIRouter(prefix="/v1/intel", tags=["intel"])
TAXII_API_ROOT = "hydraguard"
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"


class IndicatorIn(_In):
    kind: IndicatorKind
    value: str = Field(min_length=1, max_length=MAX_VALUE_CHARS, pattern=_NO_CONTROL)
    confidence: int = Field(default=50, ge=0, le=100)
    ttl: float | None = Field(default=None, gt=0, le=TEN_YEARS, allow_inf_nan=False, description="Seconds it holds.")
    description: str = Field(default="", max_length=MAX_DESCRIPTION_CHARS, pattern=_NO_CONTROL)


class IndicatorOut(_Out):
    id: str
    kind: str
    value: str
    sources: list[str]
    confidence: int
    first_seen: float
    last_seen: float
    expires_at: float | None
    description: str


class IndicatorPage(BaseModel):
    indicators: list[IndicatorOut]
    next_after: str | None = Field(description="Pass as `after` for the next page; null on the last one.")


class FeedIn(_In):
    format: FeedFormat
    content: str = Field(min_length=1, description="The feed's text: a list, a CSV file or a STIX 2.1 bundle.")
    source: Text
    kind: IndicatorKind | None = Field(default=None, description="The kind of a list's values (CSV: its default).")
    confidence: int = Field(default=50, ge=0, le=100, description="For list entries.")


class FeedOut(BaseModel):
    feed: str
    parsed: int
    added: int
    updated: int
    skipped: int = Field(description="Valid entries naming nothing hydraguard matches (file hashes, URLs, ...).")


class IntelSummary(BaseModel):
    indicators: int
    version: int = Field(description="Moves with every change; gateways reload when it does.")


@router.get("")
def summary(admin: Services, _: Viewer) -> IntelSummary:
    return IntelSummary(**admin.intel_summary())


@router.get("/indicators")
def list_indicators(
    admin: Services,
    _: Viewer,
    kind: Annotated[IndicatorKind | None, Query()] = None,
    after: Annotated[str, Query(max_length=40, description="Indicators with ids after this one.")] = "",
    limit: Annotated[int, Query(ge=1, le=1_000)] = 100,
) -> IndicatorPage:
    found = admin.list_indicators(kind, after=after, limit=limit)
    return IndicatorPage(
        indicators=[IndicatorOut.of(i) for i in found], next_after=found[-1].id if len(found) == limit else None
    )


@router.get("/indicators/{indicator_id}")
def get_indicator(indicator_id: Annotated[Id, Path()], admin: Services, _: Viewer) -> IndicatorOut:
    return IndicatorOut.of(admin.get_indicator(indicator_id))  # type: ignore[no-any-return]


@router.post("/indicators", status_code=201)
def add_indicator(body: IndicatorIn, admin: Services, actor: Analyst) -> IndicatorOut:
    indicator = admin.add_indicator(
        actor,
        body.kind,
        body.value,
        confidence=body.confidence,
        expires_at=time.time() + body.ttl if body.ttl else None,
        description=body.description,
    )
    return IndicatorOut.of(indicator)  # type: ignore[no-any-return]


@router.delete("/indicators/{indicator_id}")
def remove_indicator(indicator_id: Annotated[Id, Path()], admin: Services, actor: Analyst) -> IndicatorOut:
    return IndicatorOut.of(admin.remove_indicator(actor, indicator_id))  # type: ignore[no-any-return]


@router.post("/feeds", status_code=201)
def import_feed(body: FeedIn, admin: Services, actor: Analyst) -> FeedOut:
    report = admin.import_feed(
        actor, body.content.encode(), body.format, source=body.source, kind=body.kind, confidence=body.confidence
    )
    return FeedOut(**report)


# -- TAXII 2.1 ---------------------------------------------------------------------------------------------------
async def taxii_server(scope: Scope, receive: Receive, send: Send) -> None:
    """The read-only TAXII server of campaigns (`intel.campaign_collection`), for viewers and above: mounted at
    /taxii2 of the admin app, whose services it reads (so it is built on first use, not with the app)."""
    if scope["type"] != "http":
        return
    app = scope["app"]
    services: AdminServices = app.state.services
    refusal = _refused(services, Request(scope))
    if refusal is not None:
        status, message = refusal
        title = "Unauthorized" if status == 401 else "Forbidden"
        body = msgspec.json.encode({"title": title, "description": message, "http_status": str(status)})
        headers = {"www-authenticate": "Bearer"} if status == 401 else None
        await Response(body, status, headers=headers, media_type=TAXII_MEDIA_TYPE)(scope, receive, send)
        return
    server = getattr(app.state, "taxii", None)
    if server is None:
        collection = services.campaign_collection
        server = app.state.taxii = taxii_app(
            {collection.id: collection}, title="hydraguard campaigns", api_root=TAXII_API_ROOT, discovery_path="/"
        )
    await server(scope, receive, send)


def _refused(services: AdminServices, request: Request) -> tuple[int, str] | None:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return 401, "an admin token is required (Authorization: Bearer …)"
    token = services.authenticate(credentials.strip())
    if token is None:
        return 401, "the admin token is unknown or revoked"
    if not token.role.allows(Role.VIEWER):
        return 403, f"this needs the {Role.VIEWER} role"
    return None
