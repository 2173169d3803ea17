"""Admin tokens and their roles: viewer (read), analyst (also campaigns and decisions), admin (everything).

A token is `hga_` and 43 URL-safe random characters, shown once. Only its HMAC under the server secret is
stored, hashed as API keys are (`accounts.keys.key_hash`).
"""

from __future__ import annotations

import enum
import secrets
import time
import uuid

import msgspec
import sqlalchemy as sa

from hydraguard.accounts import keys
from hydraguard.admin.tables import admin_tokens

PREFIX = "hga_"
_MAX_LENGTH = 200  # far above a real token's length: longer input is not worth hashing


class Role(enum.StrEnum):
    VIEWER = "viewer"
    ANALYST = "analyst"
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        return _RANK[self] >= _RANK[needed]


_RANK = {Role.VIEWER: 0, Role.ANALYST: 1, Role.ADMIN: 2}


class AdminToken(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    role: Role
    created_at: float
    revoked_at: float | None = None


class TokenError(Exception):
    """A token operation that cannot be done (unknown id, name taken)."""


def _token(row: object) -> AdminToken:
    data = dict(row)  # type: ignore[call-overload]
    data.pop("token_hash", None)
    return AdminToken(**{**data, "role": Role(data["role"])})


def create(conn: sa.Connection, secret: bytes, name: str, role: Role) -> tuple[AdminToken, str]:
    """A new token: the record, and the plaintext, which is never stored or shown again."""
    if conn.execute(sa.select(admin_tokens.c.id).where(admin_tokens.c.name == name)).first() is not None:
        raise TokenError(f"an admin token named {name!r} exists (names stay taken after revocation)")
    plaintext = PREFIX + secrets.token_urlsafe(32)
    record = AdminToken(id="tok_" + uuid.uuid4().hex[:20], name=name, role=Role(role), created_at=time.time())
    row = {**msgspec.structs.asdict(record), "role": record.role.value}
    conn.execute(admin_tokens.insert().values(**row, token_hash=keys.key_hash(secret, plaintext)))
    return record, plaintext


def get(conn: sa.Connection, token_id: str) -> AdminToken:
    row = conn.execute(admin_tokens.select().where(admin_tokens.c.id == token_id)).mappings().first()
    if row is None:
        raise TokenError(f"no admin token {token_id!r}")
    return _token(row)


def list_all(conn: sa.Connection) -> list[AdminToken]:
    rows = conn.execute(admin_tokens.select().order_by(admin_tokens.c.created_at)).mappings()
    return [_token(r) for r in rows]


def revoke(conn: sa.Connection, token_id: str) -> AdminToken:
    conn.execute(admin_tokens.update().where(admin_tokens.c.id == token_id).values(revoked_at=time.time()))
    return get(conn, token_id)


def authenticate(engine: sa.Engine, secret: bytes, plaintext: str) -> AdminToken | None:
    """The token's record if it is one of ours and not revoked, else None."""
    if not plaintext.startswith(PREFIX) or len(plaintext) > _MAX_LENGTH:
        return None
    digest = keys.key_hash(secret, plaintext)
    with engine.connect() as conn:
        row = conn.execute(admin_tokens.select().where(admin_tokens.c.token_hash == digest)).mappings().first()
    if row is None or row["revoked_at"] is not None:
        return None
    return _token(row)
