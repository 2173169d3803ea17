from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from hydraguard.admin.auth import Admin, Services
from hydraguard.admin.schemas import Id, IssuedToken, TokenIn, TokenOut

router = APIRouter(prefix="/v1/tokens", tags=["admin tokens"])


@router.get("")
def list_tokens(admin: Services, _: Admin) -> list[TokenOut]:
    return [TokenOut.of(t) for t in admin.list_tokens()]


@router.post("", status_code=201)
def create_token(body: TokenIn, admin: Services, actor: Admin) -> IssuedToken:
    record, plaintext = admin.create_token(actor, body.name, body.role)
    return IssuedToken.of(record, token=plaintext)


@router.post("/{token_id}/revoke")
def revoke_token(token_id: Annotated[Id, Path()], admin: Services, actor: Admin) -> TokenOut:
    return TokenOut.of(admin.revoke_token(actor, token_id))
