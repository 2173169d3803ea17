"""Sealing: round trip, binding to account, model and conversation, expiry, tampering, key rotation."""

from __future__ import annotations

import pytest

from hydraguard.controls.seal import Binding, Sealer, SignatureRefused, prefix_hashes
from hydraguard.controls.trace import Trace

SECRET = b"a server secret of reasonable length"
TRACE = Trace("first this, then that", "think")
BINDING = Binding("acct_1", "model-a", "0" * 64)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_round_trip_and_the_trace_is_not_readable():
    sealer = Sealer(SECRET, ["k1"], 60)
    signature = sealer.seal(TRACE, BINDING)
    assert signature.startswith("k1.") and "first" not in signature
    assert sealer.open(signature, BINDING) == TRACE
    assert sealer.seal(TRACE, BINDING) != signature  # a fresh nonce each time


@pytest.mark.parametrize(
    "other",
    [
        Binding("acct_2", "model-a", "0" * 64),
        Binding("acct_1", "model-b", "0" * 64),
        Binding("acct_1", "model-a", "1" * 64),
    ],
)
def test_another_binding_does_not_open(other):
    sealer = Sealer(SECRET, ["k1"], 60)
    with pytest.raises(SignatureRefused, match="does not belong"):
        sealer.open(sealer.seal(TRACE, BINDING), other)


def test_expiry_is_inside_the_seal():
    clock = Clock()
    sealer = Sealer(SECRET, ["k1"], 60, clock=clock)
    signature = sealer.seal(TRACE, BINDING)
    clock.now += 59.9
    assert sealer.open(signature, BINDING) == TRACE
    clock.now += 0.2
    with pytest.raises(SignatureRefused, match="expired"):
        sealer.open(signature, BINDING)


def test_tampering_and_garbage_are_refused():
    sealer = Sealer(SECRET, ["k1"], 60)
    signature = sealer.seal(TRACE, BINDING)
    for i in range(3, len(signature), 7):
        flipped = signature[:i] + ("A" if signature[i] != "A" else "B") + signature[i + 1 :]
        with pytest.raises(SignatureRefused):
            sealer.open(flipped, BINDING)
    for garbage in ["", "k1", "k1.", "k1.!!!", "k1.AAAA", "nokey.AAAA"]:
        with pytest.raises(SignatureRefused):
            sealer.open(garbage, BINDING)


def test_rotation_old_keys_open_until_removed_and_other_secrets_never():
    old = Sealer(SECRET, ["k1"], 60).seal(TRACE, BINDING)
    rotated = Sealer(SECRET, ["k1", "k2"], 60)
    assert rotated.open(old, BINDING) == TRACE
    new = rotated.seal(TRACE, BINDING)
    assert new.startswith("k2.")
    with pytest.raises(SignatureRefused, match="no longer accepted"):
        Sealer(SECRET, ["k2"], 60).open(old, BINDING)
    with pytest.raises(SignatureRefused, match="does not belong"):
        Sealer(b"another secret", ["k2"], 60).open(new, BINDING)


def test_prefix_hashes_ignore_reasoning_but_not_conversation():
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_signature": "x"}]
    same = [{"content": "q", "role": "user"}, {"role": "assistant", "content": "a", "reasoning_content": "r"}]
    other = [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a"}]
    assert prefix_hashes(messages) == prefix_hashes(same)
    assert prefix_hashes(messages)[1] != prefix_hashes(other)[1]
    assert len(set(prefix_hashes(messages))) == 3
