"""The account registry: orgs, accounts and API keys in a SQL database (SQLite by default).

Authentication runs on the request path, so resolved keys are cached in process. Changes made
through this `Registry` drop the cache at once. Changes made by another connection (another gateway
process, the CLI) are noticed within `change_check_interval` (0.1 s): SQLite's `PRAGMA data_version`
tells whether anyone committed; other databases drop the cache on that interval.
"""

from __future__ import annotations

import ipaddress
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
import sqlalchemy as sa

from hydraguard.accounts import keys
from hydraguard.accounts.models import Account, AccountStatus, ApiKey, Org, Principal
from hydraguard.limits.policy import LimitSet
from hydraguard.store.migrate import ensure_schema

metadata = sa.MetaData()

orgs = sa.Table(
    "orgs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("tier", sa.String(60), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("org_id", sa.String(40), sa.ForeignKey("orgs.id"), nullable=False, index=True),
    sa.Column("tier", sa.String(60), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("signup_at", sa.Float, nullable=False),
    sa.Column("signup_ip", sa.String(64)),
    sa.Column("email_domain", sa.String(255)),
    sa.Column("payment_fingerprint", sa.String(64), index=True),
    sa.Column("limit_overrides", sa.Text),
)
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("account_id", sa.String(40), sa.ForeignKey("accounts.id"), nullable=False, index=True),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("hint", sa.String(40), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
    sa.Column("expires_at", sa.Float),
)


class RegistryError(Exception):
    """A registry operation that cannot be done (unknown id, bad value); the message says why."""


def _new_id(kind: str) -> str:
    return f"{kind}_{uuid.uuid4().hex[:20]}"


class Registry:
    def __init__(
        self,
        url: str,
        secret: bytes,
        *,
        cache_size: int = 100_000,
        change_check_interval: float = 0.1,
        upgrade_schema: bool = True,
    ) -> None:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = sa.create_engine(url)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        ensure_schema(self.engine, upgrade=upgrade_schema)
        self._secret = secret
        self._cache: dict[str, Principal | None] = {}
        self._digests: dict[str, str] = {}
        self._cache_size = cache_size
        self._watch = self.engine.raw_connection() if self.engine.dialect.name == "sqlite" else None
        self._data_version = self._read_data_version()
        self.change_check_interval = change_check_interval
        self._last_check = time.monotonic()

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[sa.Connection]:
        with self.engine.begin() as conn:
            yield conn
        self._cache.clear()

    # -- orgs and accounts --------------------------------------------------------------------------
    def create_org(self, name: str, tier: str = "free") -> Org:
        org = Org(id=_new_id("org"), name=name, tier=tier, created_at=time.time())
        with self._tx() as conn:
            conn.execute(orgs.insert().values(**msgspec.structs.asdict(org)))
        return org

    def get_org(self, org_id: str) -> Org:
        with self.engine.connect() as conn:
            row = conn.execute(orgs.select().where(orgs.c.id == org_id)).mappings().first()
        if row is None:
            raise RegistryError(f"no org {org_id!r}")
        return Org(**row)

    def list_orgs(self) -> list[Org]:
        with self.engine.connect() as conn:
            return [Org(**r) for r in conn.execute(orgs.select().order_by(orgs.c.created_at)).mappings()]

    def create_account(
        self,
        org_id: str,
        *,
        tier: str = "free",
        signup_at: float | None = None,
        signup_ip: str | None = None,
        email_domain: str | None = None,
        payment_method: str | None = None,
    ) -> Account:
        self.get_org(org_id)
        if signup_ip is not None:
            try:
                signup_ip = str(ipaddress.ip_address(signup_ip))
            except ValueError as exc:
                raise RegistryError(f"signup IP {signup_ip!r} is not an IP address") from exc
        account = Account(
            id=_new_id("acct"),
            org_id=org_id,
            tier=tier,
            status=AccountStatus.ACTIVE,
            signup_at=time.time() if signup_at is None else signup_at,
            signup_ip=signup_ip,
            email_domain=email_domain.lower() if email_domain else None,
            payment_fingerprint=keys.keyed_fingerprint(self._secret, "payment", payment_method)
            if payment_method
            else None,
        )
        with self._tx() as conn:
            conn.execute(accounts.insert().values(**_account_row(account)))
        return account

    def get_account(self, account_id: str) -> Account:
        with self.engine.connect() as conn:
            row = conn.execute(accounts.select().where(accounts.c.id == account_id)).mappings().first()
        if row is None:
            raise RegistryError(f"no account {account_id!r}")
        return _account(row)

    def list_accounts(self, org_id: str | None = None) -> list[Account]:
        query = accounts.select().order_by(accounts.c.signup_at)
        if org_id is not None:
            query = query.where(accounts.c.org_id == org_id)
        with self.engine.connect() as conn:
            return [_account(r) for r in conn.execute(query).mappings()]

    def update_account(
        self,
        account_id: str,
        *,
        status: AccountStatus | None = None,
        tier: str | None = None,
        limit_overrides: LimitSet | None = None,
        clear_overrides: bool = False,
    ) -> Account:
        values: dict[str, object] = {}
        if status is not None:
            values["status"] = AccountStatus(status).value
        if tier is not None:
            values["tier"] = tier
        if limit_overrides is not None:
            values["limit_overrides"] = msgspec.json.encode(limit_overrides).decode()
        if clear_overrides:
            values["limit_overrides"] = None
        self.get_account(account_id)
        if values:
            with self._tx() as conn:
                conn.execute(accounts.update().where(accounts.c.id == account_id).values(**values))
        return self.get_account(account_id)

    # -- keys ----------------------------------------------------------------------------------------
    def issue_key(self, account_id: str) -> tuple[ApiKey, str]:
        """A new key for the account: the record, and the plaintext, which is never stored or shown again."""
        self.get_account(account_id)
        plaintext = keys.generate_key()
        record = ApiKey(id=_new_id("key"), account_id=account_id, hint=keys.hint(plaintext), created_at=time.time())
        with self._tx() as conn:
            conn.execute(
                api_keys.insert().values(
                    **msgspec.structs.asdict(record), key_hash=keys.key_hash(self._secret, plaintext)
                )
            )
        return record, plaintext

    def get_key(self, key_id: str) -> ApiKey:
        with self.engine.connect() as conn:
            row = conn.execute(api_keys.select().where(api_keys.c.id == key_id)).mappings().first()
        if row is None:
            raise RegistryError(f"no key {key_id!r}")
        return _key(row)

    def list_keys(self, account_id: str | None = None) -> list[ApiKey]:
        query = api_keys.select().order_by(api_keys.c.created_at)
        if account_id is not None:
            query = query.where(api_keys.c.account_id == account_id)
        with self.engine.connect() as conn:
            return [_key(r) for r in conn.execute(query).mappings()]

    def revoke_key(self, key_id: str) -> ApiKey:
        key = self.get_key(key_id)
        if key.revoked_at is None:
            with self._tx() as conn:
                conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(revoked_at=time.time()))
        return self.get_key(key_id)

    def rotate_key(self, key_id: str, *, grace: float = 0.0) -> tuple[ApiKey, str]:
        """Issue a successor key; the old one stops working now, or after `grace` seconds."""
        old = self.get_key(key_id)
        if not old.usable(time.time()):
            raise RegistryError(f"key {key_id!r} is revoked or expired and cannot be rotated")
        new, plaintext = self.issue_key(old.account_id)
        with self._tx() as conn:
            if grace > 0:
                conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(expires_at=time.time() + grace))
            else:
                conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(revoked_at=time.time()))
        return new, plaintext

    # -- authentication (request path) ---------------------------------------------------------------
    def authenticate(self, plaintext: str) -> Principal | None:
        """The principal for a usable key of an existing account, else None (any status: the caller
        decides what a suspended or banned account gets)."""
        self._check_data_version()
        # presented keys map to their digests in memory only, sparing a checksum and an HMAC per request
        digest = self._digests.get(plaintext)
        if digest is None:
            if not keys.well_formed(plaintext):
                return None
            digest = keys.key_hash(self._secret, plaintext)
            if len(self._digests) >= self._cache_size:
                self._digests.clear()
            self._digests[plaintext] = digest
        try:
            principal = self._cache[digest]
        except KeyError:
            principal = self._load_principal(digest)
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[digest] = principal
        if principal is None or not principal.key.usable(time.time()):
            return None
        return principal

    def _load_principal(self, digest: str) -> Principal | None:
        query = (
            sa.select(api_keys, accounts, orgs)
            .select_from(api_keys.join(accounts).join(orgs))
            .where(api_keys.c.key_hash == digest)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        n_key, n_acct = len(api_keys.c), len(accounts.c)
        key_row = dict(zip(api_keys.c.keys(), row[:n_key], strict=True))
        acct_row = dict(zip(accounts.c.keys(), row[n_key : n_key + n_acct], strict=True))
        org_row = dict(zip(orgs.c.keys(), row[n_key + n_acct :], strict=True))
        return Principal(_key(key_row), _account(acct_row), Org(**org_row))

    def _read_data_version(self) -> int | None:
        if self._watch is None:
            return None
        cursor = self._watch.cursor()
        try:
            return cursor.execute("PRAGMA data_version").fetchone()[0]
        finally:
            cursor.close()

    def _check_data_version(self) -> None:
        now = time.monotonic()
        if now - self._last_check < self.change_check_interval:
            return
        self._last_check = now
        version = self._read_data_version()
        if version is None or version != self._data_version:  # without SQLite's data_version: a plain TTL
            self._data_version = version
            self._cache.clear()


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


_limits_decoder = msgspec.json.Decoder(LimitSet)


def _account_row(account: Account) -> dict[str, object]:
    row = msgspec.structs.asdict(account)
    row["status"] = account.status.value
    row["limit_overrides"] = msgspec.json.encode(account.limit_overrides).decode() if account.limit_overrides else None
    return row


def _account(row: object) -> Account:
    data = dict(row)  # type: ignore[call-overload]
    raw = data.pop("limit_overrides")
    data["status"] = AccountStatus(data["status"])
    return Account(**data, limit_overrides=_limits_decoder.decode(raw) if raw else None)


def _key(row: object) -> ApiKey:
    data = dict(row)  # type: ignore[call-overload]
    data.pop("key_hash", None)
    return ApiKey(**data)
