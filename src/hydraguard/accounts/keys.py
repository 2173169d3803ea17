"""API keys: a recognizable prefix, 32 random base62 characters and a CRC32 checksum.

`hg_` + random + checksum lets secret scanners find leaked keys and lets the gateway reject a
mistyped key before any lookup. Only an HMAC-SHA256 of the key under the server secret is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import zlib

PREFIX = "hg_"
_ALPHABET = string.digits + string.ascii_letters
_RANDOM_LEN = 32
_CHECKSUM_LEN = 6
KEY_LENGTH = len(PREFIX) + _RANDOM_LEN + _CHECKSUM_LEN


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECKSUM_LEN)


def generate_key() -> str:
    body = "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_LEN))
    return f"{PREFIX}{body}{_checksum(body)}"


_SHAPE = re.compile(rf"{PREFIX}[0-9A-Za-z]{{{_RANDOM_LEN + _CHECKSUM_LEN}}}")


def well_formed(key: str) -> bool:
    if _SHAPE.fullmatch(key) is None:
        return False
    body, check = key[len(PREFIX) : -_CHECKSUM_LEN], key[-_CHECKSUM_LEN:]
    # the shape check admits ASCII only, which compare_digest requires
    return hmac.compare_digest(_checksum(body), check)


def key_hash(secret: bytes, key: str) -> str:
    return hmac.digest(secret, key.encode(), "sha256").hex()


def hint(key: str) -> str:
    """What listings show: the prefix and the last four characters."""
    return f"{key[: len(PREFIX) + 4]}…{key[-4:]}"


def keyed_fingerprint(secret: bytes, kind: str, value: str) -> str:
    """A stable, non-reversible fingerprint of personal data (payment method, email) for linkage."""
    return hmac.new(secret, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()[:32]
