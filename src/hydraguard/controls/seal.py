"""Sealed reasoning traces: the client holds an opaque `reasoning_signature` instead of the trace.

AES-GCM (`cryptography`) with 256-bit keys derived by HKDF from the server secret and a key id. A
signature is `<key id>.<base64url(nonce | ciphertext)>`: the newest configured key seals, older ones still
open until removed from the configuration. The associated data binds a signature to the account, the
model and a hash of the conversation before the assistant turn, so a saved signature replayed by
another account or in another conversation does not open; the expiry travels inside the sealed payload.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hydraguard.controls.trace import REASONING_FIELDS, Style, Trace

NONCE_BYTES = 12
_KDF_INFO = b"hydraguard reasoning seal v1 "
# a message's own reasoning never counts as conversation: it is sealed, restored or stripped on the way
_UNHASHED = frozenset(("reasoning_signature", *REASONING_FIELDS))


class SignatureRefused(Exception):
    """A reasoning signature that does not open for this request."""


@dataclass(frozen=True, slots=True)
class Binding:
    account_id: str
    model: str
    prefix_hash: str

    def associated_data(self) -> bytes:
        return msgspec.json.encode([self.account_id, self.model, self.prefix_hash])


class _Payload(msgspec.Struct, array_like=True):
    text: str
    style: Style
    field: str
    expires_at: float


def prefix_hashes(messages: Sequence[Any]) -> list[str]:
    """The hash of each prefix of the conversation: `result[i]` covers `messages[:i]`."""
    digest = hashlib.sha256()
    hashes_ = [digest.hexdigest()]
    for message in messages:
        if isinstance(message, dict):
            message = {k: v for k, v in message.items() if k not in _UNHASHED}
        digest.update(msgspec.json.encode(message, order="sorted") + b"\n")
        hashes_.append(digest.hexdigest())
    return hashes_


def derive_key(secret: bytes, key_id: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KDF_INFO + key_id.encode()).derive(secret)


class Sealer:
    def __init__(
        self, secret: bytes, key_ids: Sequence[str], ttl: float, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._keys = {key_id: AESGCM(derive_key(secret, key_id)) for key_id in key_ids}
        self._current = key_ids[-1]
        self._ttl = ttl
        self._clock = clock
        self._payload = msgspec.msgpack.Decoder(_Payload)

    def seal(self, trace: Trace, binding: Binding) -> str:
        payload = msgspec.msgpack.encode(_Payload(trace.text, trace.style, trace.field, self._clock() + self._ttl))
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self._current].encrypt(nonce, payload, binding.associated_data())
        return self._current + "." + base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()

    def open(self, signature: str, binding: Binding) -> Trace:
        key_id, dot, encoded = signature.partition(".")
        if not dot or not encoded:
            raise SignatureRefused("is not a reasoning signature issued by this service")
        key = self._keys.get(key_id)
        if key is None:
            raise SignatureRefused("was sealed with a key that is no longer accepted")
        try:
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError) as exc:
            raise SignatureRefused("is not a reasoning signature issued by this service") from exc
        try:
            payload = self._payload.decode(key.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], binding.associated_data()))
        except (InvalidTag, ValueError) as exc:  # ValueError: too short to hold a nonce and a tag
            raise SignatureRefused("does not belong to this account, model and conversation, or was altered") from exc
        if payload.expires_at <= self._clock():
            raise SignatureRefused("has expired")
        return Trace(payload.text, payload.style, payload.field)
