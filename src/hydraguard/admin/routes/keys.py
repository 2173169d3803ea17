from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from hydraguard.admin.auth import Admin, Services, Viewer
from hydraguard.admin.schemas import Id, IssuedKey, KeyOut, RotateIn

router = APIRouter(prefix="/v1/keys", tags=["keys"])


@router.get("")
def list_keys(admin: Services, _: Viewer, account_id: Annotated[Id | None, Query()] = None) -> list[KeyOut]:
    return [KeyOut.of(k) for k in admin.list_keys(account_id)]


@router.get("/{key_id}")
def get_key(key_id: Annotated[Id, Path()], admin: Services, _: Viewer) -> KeyOut:
    return KeyOut.of(admin.get_key(key_id))


@router.post("/{key_id}/rotate", status_code=201)
def rotate_key(key_id: Annotated[Id, Path()], body: RotateIn, admin: Services, actor: Admin) -> IssuedKey:
    record, plaintext = admin.rotate_key(actor, key_id, grace=body.grace)
    return IssuedKey.of(record, key=plaintext, replaces=key_id)


@router.post("/{key_id}/revoke")
def revoke_key(key_id: Annotated[Id, Path()], admin: Services, actor: Admin) -> KeyOut:
    return KeyOut.of(admin.revoke_key(actor, key_id))
