from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from hydraguard.admin.auth import Analyst, Services, Viewer
from hydraguard.admin.schemas import DecisionIn, DecisionOut, GroupIn, GroupOut, Id
from hydraguard.decide.model import Decision

router = APIRouter(prefix="/v1", tags=["decisions"])


@router.get("/decisions")
async def list_decisions(admin: Services, _: Viewer) -> list[DecisionOut]:
    return [DecisionOut.of(d) for d in await admin.list_decisions()]


@router.post("/decisions", status_code=201)
async def add_decision(body: DecisionIn, admin: Services, actor: Analyst) -> DecisionOut:
    try:
        decision = Decision(
            type=body.type,
            scope=body.scope,
            value=body.value,
            reason=body.reason,
            source=actor.name,
            expires_at=time.time() + body.ttl if body.ttl else None,
            limits=body.limits.to_set() if body.limits is not None else None,
            profile=body.profile,
        )
    except ValueError as exc:
        raise HTTPException(422, f"invalid decision: {exc}") from exc
    return DecisionOut.of(await admin.add_decision(actor, decision))


@router.delete("/decisions/{decision_id}")
async def remove_decision(decision_id: Annotated[Id, Path()], admin: Services, actor: Analyst) -> DecisionOut:
    return DecisionOut.of(await admin.remove_decision(actor, decision_id))


@router.put("/groups/{group_id}")
async def set_group(group_id: Annotated[Id, Path()], body: GroupIn, admin: Services, actor: Analyst) -> GroupOut:
    return GroupOut(id=group_id, accounts=await admin.set_group(actor, group_id, body.accounts))
