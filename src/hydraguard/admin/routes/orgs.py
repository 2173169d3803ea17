from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from hydraguard.admin.auth import Admin, Services, Viewer
from hydraguard.admin.schemas import Id, OrgIn, OrgOut

router = APIRouter(prefix="/v1/orgs", tags=["orgs"])


@router.get("")
def list_orgs(admin: Services, _: Viewer) -> list[OrgOut]:
    return [OrgOut.of(o) for o in admin.list_orgs()]


@router.post("", status_code=201)
def create_org(body: OrgIn, admin: Services, actor: Admin) -> OrgOut:
    return OrgOut.of(admin.create_org(actor, body.name, body.tier))


@router.get("/{org_id}")
def get_org(org_id: Annotated[Id, Path()], admin: Services, _: Viewer) -> OrgOut:
    return OrgOut.of(admin.get_org(org_id))
