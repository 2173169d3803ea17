"""Signed webhooks: the provider signs `<timestamp>.<body>` with HMAC-SHA256 under a shared secret.

Headers: `X-Hydraguard-Timestamp: <unix seconds>` and `X-Hydraguard-Signature: sha256=<hex>`. A signature is
accepted once, within `tolerance` seconds of its timestamp: it is remembered until its timestamp leaves the
window (after which the timestamp check alone refuses it), so the seen-signature table stays small.
"""

from __future__ import annotations

import hmac

import sqlalchemy as sa

from hydraguard.accounts.verification import metadata
from hydraguard.admin.services import Conflict
from hydraguard.signing import SCHEME, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

seen_signatures = sa.Table(
    "webhook_signatures",
    metadata,
    sa.Column("signature", sa.String(64), primary_key=True),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
)


class SignatureError(Exception):
    """Missing, malformed, wrong or stale: the request is not the provider's (401)."""


class Replayed(Conflict):
    """A correctly signed request that was already received (409)."""


def parse(timestamp: str | None, signature: str | None) -> tuple[int, str]:
    """The headers' timestamp and signature, checked for form only; raises `SignatureError` saying what is wrong."""
    if not timestamp or not signature:
        raise SignatureError(f"a signed webhook needs the {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} headers")
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise SignatureError(f"{TIMESTAMP_HEADER} must be a Unix time in whole seconds")
    if not signature.isascii() or not signature.startswith(SCHEME):
        raise SignatureError(f"{SIGNATURE_HEADER} must be {SCHEME}<hex HMAC-SHA256 of '<timestamp>.<body>'>")
    return int(timestamp), signature


def verify(secret: bytes, timestamp: int, signature: str, body: bytes, *, now: float, tolerance: float) -> str:
    """The verified signature's hex digest; raises `SignatureError` for a wrong or stale one."""
    if not hmac.compare_digest(sign(secret, timestamp, body), signature):
        raise SignatureError("the webhook signature does not match (wrong secret, or the body or timestamp changed)")
    if abs(now - timestamp) > tolerance:
        raise SignatureError(
            f"the webhook timestamp is more than {tolerance:g} s from now: send it again, freshly signed"
        )
    return signature.removeprefix(SCHEME)


def claim(conn: sa.Connection, digest: str, *, expires_at: float, now: float) -> None:
    """Remember a verified signature in the caller's transaction: if the change it carries is refused and rolled
    back, the provider can send the same request again."""
    conn.execute(seen_signatures.delete().where(seen_signatures.c.expires_at < now))
    if conn.execute(sa.select(seen_signatures.c.signature).where(seen_signatures.c.signature == digest)).first():
        raise Replayed("this webhook was already received (a replay); nothing was changed")
    conn.execute(seen_signatures.insert().values(signature=digest, expires_at=expires_at))
