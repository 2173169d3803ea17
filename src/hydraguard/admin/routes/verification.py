"""Signup with risk assessment, verification levels, payments and tiers, for operators (admin token)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from hydraguard.accounts.risk import SignupRequest
from hydraguard.accounts.status import VerificationStatus
from hydraguard.accounts.verification import Source
from hydraguard.admin.audit import Actor
from hydraguard.admin.auth import Admin, Services, Viewer
from hydraguard.admin.schemas import AccountOut, DecisionOut, Id
from hydraguard.admin.services import AdminServices
from hydraguard.admin.verification_schemas import (
    LevelIn,
    PaymentIn,
    SignupIn,
    SignupOut,
    SignupResult,
    VerificationStatusOut,
)

router = APIRouter(prefix="/v1", tags=["verification"])
AccountId = Annotated[Id, Path()]


async def signup(admin: AdminServices, actor: Actor, body: SignupIn, **kwargs: object) -> SignupResult:
    """One signup, from an operator or the provider's webhook."""
    request = SignupRequest(**body.model_dump(exclude={"org_id", "org_name"}))
    account, record, challenge = await admin.signup(
        actor,
        request,
        org_id=body.org_id,
        org_name=body.org_name,
        **kwargs,  # type: ignore[arg-type]
    )
    return SignupResult(
        account=AccountOut.of(account),
        signup=SignupOut.of(record),
        challenge=DecisionOut.of(challenge) if challenge is not None else None,
    )


def status_out(status: VerificationStatus) -> VerificationStatusOut:
    return VerificationStatusOut.of(status)  # type: ignore[no-any-return]


@router.post("/signups", status_code=201)
async def create_signup(body: SignupIn, admin: Services, actor: Admin) -> SignupResult:
    """Create an account with its signup risk assessed: the score sets its starting tier, and whether it must
    verify before first use (it then starts with a challenge decision)."""
    return await signup(admin, actor, body)


@router.get("/accounts/{account_id}/verification")
async def get_verification(account_id: AccountId, admin: Services, _: Viewer) -> VerificationStatusOut:
    """Levels held and required, payments, standing, the computed tier and why, and the signup's risk signals."""
    return status_out(await admin.verification_status(account_id))


@router.post("/accounts/{account_id}/verification")
async def report_level(account_id: AccountId, body: LevelIn, admin: Services, actor: Admin) -> VerificationStatusOut:
    """Record the provider's verdict on a level; a success lifts the challenges it satisfies."""
    status = await admin.report_verification(
        actor, account_id, body.level, body.outcome, source=Source.ADMIN, provider_ref=body.provider_ref
    )
    return status_out(status)


@router.post("/accounts/{account_id}/payments")
async def record_payment(
    account_id: AccountId, body: PaymentIn, admin: Services, actor: Admin
) -> VerificationStatusOut:
    status = await admin.record_payment(
        actor, account_id, body.outcome, source=Source.ADMIN, provider_ref=body.provider_ref
    )
    return status_out(status)


@router.post("/accounts/{account_id}/tier")
async def recompute_tier(account_id: AccountId, admin: Services, actor: Admin) -> VerificationStatusOut:
    """Write the tier the account's record earns now (age alone can raise it)."""
    return status_out(await admin.recompute_tier(actor, account_id))
