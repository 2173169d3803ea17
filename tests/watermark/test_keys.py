from __future__ import annotations

import pytest

from hydraguard.watermark.keys import derive_key, derive_keys
from tests.watermark.conftest import MASTER


def test_keys_are_deterministic_and_bound_to_their_scope() -> None:
    first = derive_key(MASTER, "account", "acct-1")
    assert first == derive_key(MASTER, "account", "acct-1")
    assert first.scope == "account:acct-1"
    assert len(first.secret) == 32
    others = {
        derive_key(MASTER, "account", "acct-2").secret,
        derive_key(MASTER, "cluster", "acct-1").secret,
        derive_key(MASTER + b"!", "account", "acct-1").secret,
    }
    assert first.secret not in others
    assert len(others) == 3


def test_the_secret_never_appears_in_repr() -> None:
    key = derive_key(MASTER, "cluster", "c7")
    assert key.secret.hex() not in repr(key)
    assert "secret" not in repr(key)


@pytest.mark.parametrize(
    ("master", "kind", "scope_id", "message"),
    [
        (b"short", "account", "a", "at least 16 bytes"),
        (MASTER, "org", "a", "scope kind"),
        (MASTER, "account", "", "invalid account id"),
        (MASTER, "account", " a", "invalid account id"),
    ],
)
def test_bad_input_is_refused(master: bytes, kind: str, scope_id: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        derive_key(master, kind, scope_id)  # type: ignore[arg-type]


def test_many_keys_refuse_duplicates_and_emptiness() -> None:
    assert [key.scope for key in derive_keys(MASTER, "account", ["a", "b"])] == ["account:a", "account:b"]
    with pytest.raises(ValueError, match="duplicate"):
        derive_keys(MASTER, "account", ["a", "a"])
    with pytest.raises(ValueError, match="no account"):
        derive_keys(MASTER, "account", [])
