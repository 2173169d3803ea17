"""Per-account and per-cluster watermark keys, derived from one master secret with HKDF-SHA256.

The HKDF `info` binds each key to its scope ("account:<id>" or "cluster:<id>"), so keys for different accounts
are independent and any of them can be re-derived from the master secret at detection time; nothing per account
needs to be stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ScopeKind = Literal["account", "cluster"]
SCOPE_KINDS: tuple[ScopeKind, ...] = ("account", "cluster")

_SALT = b"hydraguard-watermark-v1"
_KEY_BYTES = 32
_MIN_MASTER_BYTES = 16


@dataclass(frozen=True)
class WatermarkKey:
    scope: str  # "account:<id>" or "cluster:<id>"
    secret: bytes = field(repr=False)


def scope_name(kind: ScopeKind, scope_id: str) -> str:
    if kind not in SCOPE_KINDS:
        raise ValueError(f"scope kind must be one of {SCOPE_KINDS}, got {kind!r}")
    if not scope_id or scope_id != scope_id.strip():
        raise ValueError(f"invalid {kind} id {scope_id!r}: empty or padded with whitespace")
    return f"{kind}:{scope_id}"


def derive_key(master_secret: bytes, kind: ScopeKind, scope_id: str) -> WatermarkKey:
    if len(master_secret) < _MIN_MASTER_BYTES:
        raise ValueError(f"the watermark master secret must be at least {_MIN_MASTER_BYTES} bytes")
    scope = scope_name(kind, scope_id)
    hkdf = HKDF(algorithm=hashes.SHA256(), length=_KEY_BYTES, salt=_SALT, info=scope.encode())
    return WatermarkKey(scope=scope, secret=hkdf.derive(master_secret))


def derive_keys(master_secret: bytes, kind: ScopeKind, scope_ids: list[str]) -> list[WatermarkKey]:
    if not scope_ids:
        raise ValueError("no account or cluster ids to derive keys for")
    if len(set(scope_ids)) != len(scope_ids):
        raise ValueError("duplicate account or cluster ids")
    return [derive_key(master_secret, kind, scope_id) for scope_id in scope_ids]
