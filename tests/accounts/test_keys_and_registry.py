"""API key format and hashing; the registry of orgs, accounts and keys."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from hydraguard.accounts import keys
from hydraguard.accounts.models import AccountStatus
from hydraguard.accounts.registry import Registry, RegistryError
from hydraguard.limits.policy import LimitSet

SECRET = b"registry-test-secret"


# -- keys ---------------------------------------------------------------------------------------------------
def test_generated_keys_have_prefix_length_and_alphabet():
    generated = {keys.generate_key() for _ in range(200)}
    assert len(generated) == 200
    for key in generated:
        assert key.startswith("hg_")
        assert len(key) == keys.KEY_LENGTH == 3 + 32 + 6
        assert key[3:].isascii() and key[3:].isalnum()
        assert keys.well_formed(key)


def test_well_formed_rejects_every_single_character_change():
    key = keys.generate_key()
    substitutes = keys._ALPHABET + "_-.+/= é"
    changed = 0
    for position in range(len(key)):
        for char in substitutes:
            if char == key[position]:
                continue
            mutated = key[:position] + char + key[position + 1 :]
            assert not keys.well_formed(mutated), (position, char)
            changed += 1
    assert changed > len(key) * 60


def test_well_formed_rejects_wrong_prefix_and_length():
    key = keys.generate_key()
    body = key[3:]
    assert not keys.well_formed("sk_" + body)
    assert not keys.well_formed("HG_" + body)
    assert not keys.well_formed(body)
    assert not keys.well_formed(key[:-1])
    assert not keys.well_formed(key + "a")
    assert not keys.well_formed(key[:10] + key[11:])  # a character dropped
    assert not keys.well_formed("")
    assert not keys.well_formed("hg_")
    assert not keys.well_formed(" " + key[:-1])


def test_key_hash_depends_on_secret_and_key():
    key, other = keys.generate_key(), keys.generate_key()
    digest = keys.key_hash(b"secret-a", key)
    assert digest == keys.key_hash(b"secret-a", key)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert digest != keys.key_hash(b"secret-b", key)
    assert digest != keys.key_hash(b"secret-a", other)
    assert key not in digest


def test_hint_shows_only_prefix_and_last_four():
    key = keys.generate_key()
    shown = keys.hint(key)
    assert shown.startswith(key[:7]) and shown.endswith(key[-4:])
    assert key[7:-4] not in shown
    assert len(shown.replace("…", "")) == 11


def test_keyed_fingerprint_is_keyed_and_kind_separated():
    fp = keys.keyed_fingerprint(b"s1", "payment", "card_123")
    assert fp == keys.keyed_fingerprint(b"s1", "payment", "card_123")
    assert fp != keys.keyed_fingerprint(b"s2", "payment", "card_123")
    assert fp != keys.keyed_fingerprint(b"s1", "email", "card_123")
    assert "card_123" not in fp and len(fp) == 32


# -- registry -----------------------------------------------------------------------------------------------
@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "reg" / "registry.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request: pytest.FixtureRequest, db_path: Path) -> str:
    """The registry's database on each backend: a SQLite file, a PostgreSQL database of the test's own."""
    if request.param == "sqlite":
        return f"sqlite:///{db_path}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def registry(registry_url: str):
    reg = Registry(registry_url, SECRET)
    yield reg
    reg.close()


@pytest.fixture
def account(registry: Registry):
    org = registry.create_org("acme", "standard")
    return registry.create_account(org.id, tier="standard")


def _stored(registry: Registry) -> bytes:
    """What the database holds: a SQLite database's files (the database and its WAL); on another backend, every
    row of every table."""
    url = registry.engine.url
    if url.get_backend_name() == "sqlite":
        db_path = Path(url.database)
        files = [p for p in db_path.parent.iterdir() if p.name.startswith(db_path.name)]
        assert db_path in files
        return b"".join(p.read_bytes() for p in files)
    with registry.engine.connect() as conn:
        tables = sa.inspect(conn).get_table_names()
        assert "api_keys" in tables
        return b"".join(repr(row).encode() for t in tables for row in conn.exec_driver_sql(f'SELECT * FROM "{t}"'))


def test_plaintext_key_is_never_stored_but_its_hmac_is(registry, account):
    issued = [registry.issue_key(account.id) for _ in range(3)]
    rotated = registry.rotate_key(issued[0][0].id, grace=60)
    stored = _stored(registry)
    for record, plaintext in [*issued, rotated]:
        assert plaintext.encode() not in stored
        assert plaintext[3:-4].encode() not in stored  # nor the random body beyond the hint
        assert keys.key_hash(SECRET, plaintext).encode() in stored
        assert record.hint == keys.hint(plaintext)


def test_issue_list_and_get(registry, account):
    r1, k1 = registry.issue_key(account.id)
    r2, k2 = registry.issue_key(account.id)
    assert k1 != k2 and keys.well_formed(k1) and keys.well_formed(k2)
    assert r1.account_id == account.id and r1.revoked_at is None and r1.expires_at is None
    assert [k.id for k in registry.list_keys(account.id)] == [r1.id, r2.id]
    assert [k.id for k in registry.list_keys()] == [r1.id, r2.id]
    assert registry.list_keys("acct_nobody") == []
    assert registry.get_key(r1.id) == r1
    principal = registry.authenticate(k1)
    assert principal is not None
    assert principal.key.id == r1.id
    assert principal.account.id == account.id
    assert principal.org.id == account.org_id and principal.org.tier == "standard"


def test_revoke(registry, account):
    record, key = registry.issue_key(account.id)
    assert registry.authenticate(key) is not None
    revoked = registry.revoke_key(record.id)
    assert revoked.revoked_at is not None and not revoked.usable(time.time())
    assert registry.authenticate(key) is None
    # revoking twice keeps the first revocation time
    assert registry.revoke_key(record.id).revoked_at == revoked.revoked_at


def test_rotate_immediately(registry, account):
    old, old_key = registry.issue_key(account.id)
    assert registry.authenticate(old_key) is not None
    new, new_key = registry.rotate_key(old.id)
    assert new.id != old.id and new_key != old_key and new.account_id == account.id
    assert registry.authenticate(old_key) is None
    assert registry.get_key(old.id).revoked_at is not None
    principal = registry.authenticate(new_key)
    assert principal is not None and principal.key.id == new.id
    with pytest.raises(RegistryError, match="cannot be rotated"):
        registry.rotate_key(old.id)


def test_rotate_with_grace_keeps_the_old_key_until_it_expires(registry, account):
    old, old_key = registry.issue_key(account.id)
    before = time.time()
    new, new_key = registry.rotate_key(old.id, grace=3600)
    record = registry.get_key(old.id)
    assert record.revoked_at is None
    assert before + 3600 <= record.expires_at <= time.time() + 3600
    assert record.usable(record.expires_at - 1) and not record.usable(record.expires_at + 1)
    assert registry.authenticate(old_key) is not None
    assert registry.authenticate(new_key) is not None
    assert registry.get_key(new.id).expires_at is None


def test_old_key_stops_working_when_grace_runs_out(registry, account):
    old, old_key = registry.issue_key(account.id)
    _, new_key = registry.rotate_key(old.id, grace=0.2)
    assert registry.authenticate(old_key) is not None  # cached now
    expires_at = registry.get_key(old.id).expires_at
    while time.time() <= expires_at:
        time.sleep(0.02)
    assert registry.authenticate(old_key) is None  # the cached principal is rechecked
    assert registry.authenticate(new_key) is not None
    with pytest.raises(RegistryError):
        registry.rotate_key(old.id)


def test_authenticate_rejects_unknown_and_malformed(registry, account):
    registry.issue_key(account.id)
    assert registry.authenticate(keys.generate_key()) is None  # well formed, never issued
    assert registry.authenticate("") is None
    assert registry.authenticate("hg_nonsense") is None
    _, key = registry.issue_key(account.id)
    assert registry.authenticate(key[:-1] + ("a" if key[-1] != "a" else "b")) is None
    # a latin-1 byte in a header decodes to a non-ASCII character: refused, not an exception
    assert registry.authenticate(key[:-1] + "é") is None
    assert registry.authenticate("hg_" + "é" * 38) is None


def test_key_from_another_secret_does_not_authenticate(registry_url, registry, account):
    _, key = registry.issue_key(account.id)
    other = Registry(registry_url, b"another-secret")
    try:
        assert other.authenticate(key) is None
    finally:
        other.close()


@pytest.mark.parametrize("interval", [0.0, 0.1])
def test_revocation_by_another_instance_is_seen_within_the_check_interval(registry_url, account, interval):
    registry = Registry(registry_url, SECRET, change_check_interval=interval)
    record, key = registry.issue_key(account.id)
    assert registry.authenticate(key) is not None  # now cached in `registry`
    assert registry.authenticate(key) is not None
    admin = Registry(registry_url, SECRET)  # e.g. the CLI, another process
    try:
        admin.revoke_key(record.id)
    finally:
        admin.close()
    time.sleep(interval * 1.5)
    assert registry.authenticate(key) is None
    registry.close()


def test_changes_by_another_instance_invalidate_the_cache(registry_url, registry, account):
    _, key = registry.issue_key(account.id)
    assert registry.authenticate(key).account.status is AccountStatus.ACTIVE
    admin = Registry(registry_url, SECRET)
    try:
        admin.update_account(account.id, status=AccountStatus.BANNED, tier="enterprise")
        # a key issued elsewhere after this instance cached a miss for it
        new_key = keys.generate_key()
        assert registry.authenticate(new_key) is None
        _, issued_elsewhere = admin.issue_key(account.id)
    finally:
        admin.close()
    time.sleep(registry.change_check_interval * 1.5)
    principal = registry.authenticate(key)
    assert principal is not None  # any status: the caller decides what a banned account gets
    assert principal.account.status is AccountStatus.BANNED and principal.account.tier == "enterprise"
    assert registry.authenticate(issued_elsewhere) is not None


def test_accounts_carry_org_tier_status_and_signup_metadata(registry):
    org = registry.create_org("Initech", "enterprise")
    assert registry.get_org(org.id) == org
    assert [o.id for o in registry.list_orgs()] == [org.id]
    account = registry.create_account(
        org.id,
        tier="enterprise",
        signup_at=1_700_000_000.0,
        signup_ip="2001:DB8:0:0::0001",
        email_domain="Mail.Example.COM",
        payment_method="pm_card_visa_4242",
    )
    assert account.org_id == org.id
    assert account.tier == "enterprise"
    assert account.status is AccountStatus.ACTIVE
    assert account.signup_at == 1_700_000_000.0
    assert account.signup_ip == "2001:db8::1"
    assert account.email_domain == "mail.example.com"
    assert account.payment_fingerprint == keys.keyed_fingerprint(SECRET, "payment", "pm_card_visa_4242")
    assert "pm_card_visa_4242" not in account.payment_fingerprint
    assert registry.get_account(account.id) == account
    assert b"pm_card_visa_4242" not in _stored(registry)

    # the same payment method links accounts; another one does not
    same = registry.create_account(org.id, payment_method="pm_card_visa_4242", signup_ip="10.0.0.1")
    different = registry.create_account(org.id, payment_method="pm_card_mc_5555")
    assert same.payment_fingerprint == account.payment_fingerprint
    assert different.payment_fingerprint != account.payment_fingerprint
    assert same.tier == "free" and same.signup_ip == "10.0.0.1" and same.email_domain is None

    listed = registry.list_accounts(org.id)
    assert [a.id for a in listed] == [account.id, same.id, different.id]  # by signup time
    other_org = registry.create_org("Other")
    assert registry.list_accounts(other_org.id) == []
    assert len(registry.list_accounts()) == 3


def test_payment_fingerprint_depends_on_the_secret(tmp_path):
    a = Registry(f"sqlite:///{tmp_path}/a.db", b"secret-a")
    b = Registry(f"sqlite:///{tmp_path}/b.db", b"secret-b")
    try:
        fa = a.create_account(a.create_org("o").id, payment_method="pm_1").payment_fingerprint
        fb = b.create_account(b.create_org("o").id, payment_method="pm_1").payment_fingerprint
        assert fa and fb and fa != fb
    finally:
        a.close()
        b.close()


def test_update_account_status_tier_and_overrides(registry, account):
    _, key = registry.issue_key(account.id)
    assert registry.authenticate(key).account.limit_overrides is None

    updated = registry.update_account(account.id, status=AccountStatus.SUSPENDED)
    assert updated.status is AccountStatus.SUSPENDED and updated.tier == "standard"
    assert registry.authenticate(key).account.status is AccountStatus.SUSPENDED

    updated = registry.update_account(account.id, status="banned", tier="free")
    assert updated.status is AccountStatus.BANNED and updated.tier == "free"

    overrides = LimitSet(rpm=5, tpm=1_000)
    updated = registry.update_account(account.id, limit_overrides=overrides)
    assert updated.limit_overrides == overrides
    assert registry.get_account(account.id).limit_overrides == overrides
    assert registry.authenticate(key).account.limit_overrides == overrides
    assert updated.status is AccountStatus.BANNED  # untouched fields stay

    assert registry.update_account(account.id) == updated  # nothing to change
    cleared = registry.update_account(account.id, clear_overrides=True)
    assert cleared.limit_overrides is None
    assert registry.authenticate(key).account.limit_overrides is None


def test_registry_errors_on_unknown_ids(registry, account):
    with pytest.raises(RegistryError, match="org_missing"):
        registry.get_org("org_missing")
    with pytest.raises(RegistryError):
        registry.create_account("org_missing")
    with pytest.raises(RegistryError, match="acct_missing"):
        registry.get_account("acct_missing")
    with pytest.raises(RegistryError):
        registry.update_account("acct_missing", status=AccountStatus.BANNED)
    with pytest.raises(RegistryError):
        registry.issue_key("acct_missing")
    with pytest.raises(RegistryError, match="key_missing"):
        registry.get_key("key_missing")
    with pytest.raises(RegistryError):
        registry.revoke_key("key_missing")
    with pytest.raises(RegistryError):
        registry.rotate_key("key_missing")
    assert registry.list_keys(account.id) == []  # nothing was issued by the failed calls


@pytest.mark.parametrize("bad_ip", ["not-an-ip", "300.1.1.1", "10.0.0.0/8", "10.0.0.1 ", "", "::g"])
def test_bad_signup_ip_is_a_registry_error(registry, bad_ip):
    org = registry.create_org("o")
    with pytest.raises(RegistryError, match="not an IP address"):
        registry.create_account(org.id, signup_ip=bad_ip)
    assert registry.list_accounts(org.id) == []


def test_registry_reopens_existing_database(registry_url, registry, account):
    record, key = registry.issue_key(account.id)
    registry.close()
    reopened = Registry(registry_url, SECRET)
    try:
        principal = reopened.authenticate(key)
        assert principal is not None and principal.key == record
        assert reopened.get_account(account.id) == account
    finally:
        reopened.close()
