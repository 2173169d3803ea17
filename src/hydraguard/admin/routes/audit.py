from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from hydraguard.admin.auth import Services, Viewer
from hydraguard.admin.schemas import AuditEntryOut, AuditPage, VerificationOut

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("")
def list_entries(
    admin: Services,
    _: Viewer,
    after: Annotated[int, Query(ge=0, le=2**62, description="Entries after this sequence number.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1_000)] = 100,
) -> AuditPage:
    entries = admin.audit_page(after=after, limit=limit)
    return AuditPage(
        entries=[AuditEntryOut.of(e) for e in entries],
        next_after=entries[-1].seq if len(entries) == limit else None,
    )


@router.get("/verify")
def verify(admin: Services, _: Viewer) -> VerificationOut:
    return VerificationOut.of(admin.verify_audit())
