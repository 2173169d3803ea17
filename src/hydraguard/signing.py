"""Signed webhooks, both ways: hydraguard's alerts out and the provider's signup and verification calls in.

The sender signs `<timestamp>.<body>` with HMAC-SHA256 under a shared secret and sends
`X-Hydraguard-Timestamp: <unix seconds>` and `X-Hydraguard-Signature: sha256=<hex>`.
"""

from __future__ import annotations

import hashlib
import hmac

TIMESTAMP_HEADER = "X-Hydraguard-Timestamp"
SIGNATURE_HEADER = "X-Hydraguard-Signature"
SCHEME = "sha256="


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    return SCHEME + hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
