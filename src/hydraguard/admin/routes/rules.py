"""Detection rules: the shipped pack, enforcing or shadow, with the campaigns each fired on."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from hydraguard.admin.auth import Services, Viewer

router = APIRouter(prefix="/v1/rules", tags=["rules"])


class RuleOut(BaseModel):
    id: str
    version: int
    title: str
    level: str
    severity: str
    action: str
    shadow: bool = Field(description="Hits are recorded, nothing is enforced.")
    tags: list[str]
    campaigns: dict[str, int] = Field(description="Campaigns it fired on, by status (open, confirmed, dismissed).")


@router.get("")
def list_rules(admin: Services, _: Viewer) -> list[RuleOut]:
    return [
        RuleOut(
            id=rule.id,
            version=rule.version,
            title=rule.title,
            level=str(rule.level),
            severity=str(rule.severity),
            action=str(rule.action),
            shadow=rule.shadow,
            tags=rule.tags,
            campaigns=counts,
        )
        for rule, counts in admin.list_rules()
    ]
