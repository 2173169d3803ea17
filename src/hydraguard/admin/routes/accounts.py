from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from hydraguard.admin.auth import Admin, Services, Viewer
from hydraguard.admin.schemas import AccountIn, AccountOut, AccountUpdate, Id, IssuedKey

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])


@router.get("")
def list_accounts(admin: Services, _: Viewer, org_id: Annotated[Id | None, Query()] = None) -> list[AccountOut]:
    return [AccountOut.of(a) for a in admin.list_accounts(org_id)]


@router.post("", status_code=201)
def create_account(body: AccountIn, admin: Services, actor: Admin) -> AccountOut:
    account = admin.create_account(
        actor,
        body.org_id,
        tier=body.tier,
        email_domain=body.email_domain,
        signup_ip=body.signup_ip,
        payment_method=body.payment_method,
    )
    return AccountOut.of(account)


@router.get("/{account_id}")
def get_account(account_id: Annotated[Id, Path()], admin: Services, _: Viewer) -> AccountOut:
    return AccountOut.of(admin.get_account(account_id))


@router.patch("/{account_id}")
def update_account(account_id: Annotated[Id, Path()], body: AccountUpdate, admin: Services, actor: Admin) -> AccountOut:
    account = admin.update_account(
        actor,
        account_id,
        status=body.status,
        tier=body.tier,
        limits=body.limits.to_set() if body.limits is not None else None,
        clear_overrides=body.clear_limits,
    )
    return AccountOut.of(account)


@router.post("/{account_id}/keys", status_code=201, tags=["keys"])
def issue_key(account_id: Annotated[Id, Path()], admin: Services, actor: Admin) -> IssuedKey:
    record, plaintext = admin.issue_key(actor, account_id)
    return IssuedKey.of(record, key=plaintext)
