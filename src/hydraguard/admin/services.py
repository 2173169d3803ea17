"""The operations the admin API and the CLI share. Each mutation commits together with one audit entry:
the change and its entry are in one transaction, so neither exists without the other.

Decisions in Redis (or in memory) cannot join a SQL transaction: they are written inside it, just before the
commit, and undone if the entry cannot be committed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import sqlalchemy as sa

from hydraguard.accounts.models import Account, AccountStatus, ApiKey, Org
from hydraguard.accounts.registry import Registry, RegistryError
from hydraguard.admin import audit, joined, tables, tokens
from hydraguard.admin.audit import Actor, AuditEntry, Verification
from hydraguard.admin.tokens import AdminToken, Role
from hydraguard.decide.model import Decision
from hydraguard.decide.store import DecisionStore
from hydraguard.limits.policy import LimitSet


class AdminError(Exception):
    """A refused operation; nothing was changed. The message says why."""


class NotFound(AdminError):
    pass


class Conflict(AdminError):
    pass


class Invalid(AdminError):
    pass


class _Change:
    """One audited change in progress: the registry joined to its transaction, and what its entry records."""

    def __init__(self, conn: sa.Connection, registry: Registry) -> None:
        self.conn = conn
        self.registry = registry
        self.target: str | None = None
        self.before: Any = None
        self.after: Any = None
        self.undo: Callable[[], Awaitable[object]] | None = None  # for a write outside the transaction


class AdminServices:
    def __init__(self, registry: Registry, decisions: DecisionStore, *, secret: bytes, tiers: Collection[str]) -> None:
        self.registry = registry
        self.decisions = decisions
        self._engine = registry.engine
        self._secret = secret
        self._tiers = frozenset(tiers)
        tables.metadata.create_all(self._engine)
        audit.ensure_head(self._engine, secret)

    # -- the audited transaction ------------------------------------------------------------------------
    @contextmanager
    def _audited(self, actor: Actor, action: str, target: str = "") -> Iterator[_Change]:
        with self._engine.begin() as conn:
            audit.lock(conn)
            change = _Change(conn, joined.registry_in(self.registry, conn))
            yield change
            self._record(change, actor, action, target)

    @asynccontextmanager
    async def _audited_decisions(
        self, actor: Actor, action: str, target: str = ""
    ) -> AsyncIterator[tuple[_Change, DecisionStore]]:
        change: _Change | None = None
        try:
            with self._engine.begin() as conn:
                audit.lock(conn)
                change = _Change(conn, joined.registry_in(self.registry, conn))
                yield change, joined.decisions_in(self.decisions, conn) or self.decisions
                self._record(change, actor, action, target)
        except BaseException:
            if change is not None and change.undo is not None:
                await change.undo()
            raise

    def _record(self, change: _Change, actor: Actor, action: str, target: str) -> None:
        audit.append(
            change.conn,
            self._secret,
            actor,
            action=action,
            target=change.target or target,
            before=change.before,
            after=change.after,
        )

    def _check_tier(self, tier: str) -> None:
        if tier not in self._tiers:
            raise Invalid(f"unknown tier {tier!r}; the config defines {', '.join(sorted(self._tiers))}")

    # -- orgs and accounts ----------------------------------------------------------------------------------
    def list_orgs(self) -> list[Org]:
        return self.registry.list_orgs()

    def get_org(self, org_id: str) -> Org:
        try:
            return self.registry.get_org(org_id)
        except RegistryError as exc:
            raise NotFound(str(exc)) from exc

    def create_org(self, actor: Actor, name: str, tier: str = "free") -> Org:
        self._check_tier(tier)
        with self._audited(actor, "org.create") as change:
            org = change.registry.create_org(name, tier)
            change.target, change.after = org.id, org
        return org

    def list_accounts(self, org_id: str | None = None) -> list[Account]:
        return self.registry.list_accounts(org_id)

    def get_account(self, account_id: str) -> Account:
        try:
            return self.registry.get_account(account_id)
        except RegistryError as exc:
            raise NotFound(str(exc)) from exc

    def create_account(
        self,
        actor: Actor,
        org_id: str,
        *,
        tier: str = "free",
        email_domain: str | None = None,
        signup_ip: str | None = None,
        payment_method: str | None = None,
    ) -> Account:
        """The raw payment method is kept only as a keyed hash, in the account and in the audit log."""
        self._check_tier(tier)
        self.get_org(org_id)
        with self._audited(actor, "account.create") as change:
            try:
                account = change.registry.create_account(
                    org_id, tier=tier, email_domain=email_domain, signup_ip=signup_ip, payment_method=payment_method
                )
            except RegistryError as exc:
                raise Invalid(str(exc)) from exc
            change.target, change.after = account.id, account
        return account

    def update_account(
        self,
        actor: Actor,
        account_id: str,
        *,
        status: AccountStatus | None = None,
        tier: str | None = None,
        limits: LimitSet | None = None,
        clear_overrides: bool = False,
    ) -> Account:
        """Change the status, tier or limit overrides; `limits` are merged into the current overrides."""
        if status is None and tier is None and limits is None and not clear_overrides:
            raise Invalid("nothing to change: give a status, a tier, limits, or clear the overrides")
        if limits is not None and clear_overrides:
            raise Invalid("give limit overrides or clear them, not both")
        if tier is not None:
            self._check_tier(tier)
        self.get_account(account_id)
        with self._audited(actor, "account.update", account_id) as change:
            before = change.registry.get_account(account_id)
            overrides = (before.limit_overrides or LimitSet()).merged(limits) if limits is not None else None
            after = change.registry.update_account(
                account_id, status=status, tier=tier, limit_overrides=overrides, clear_overrides=clear_overrides
            )
            change.before, change.after = before, after
        return after

    # -- keys -----------------------------------------------------------------------------------------------
    def list_keys(self, account_id: str | None = None) -> list[ApiKey]:
        return self.registry.list_keys(account_id)

    def get_key(self, key_id: str) -> ApiKey:
        try:
            return self.registry.get_key(key_id)
        except RegistryError as exc:
            raise NotFound(str(exc)) from exc

    def issue_key(self, actor: Actor, account_id: str) -> tuple[ApiKey, str]:
        """A new key: the record, and the plaintext, which only the caller ever sees."""
        self.get_account(account_id)
        with self._audited(actor, "key.issue") as change:
            record, plaintext = change.registry.issue_key(account_id)
            change.target, change.after = record.id, record
        return record, plaintext

    def rotate_key(self, actor: Actor, key_id: str, *, grace: float = 0.0) -> tuple[ApiKey, str]:
        """A successor key; the old one stops working now, or after `grace` seconds."""
        if grace < 0:
            raise Invalid("the grace period cannot be negative")
        self.get_key(key_id)
        with self._audited(actor, "key.rotate", key_id) as change:
            before = change.registry.get_key(key_id)
            try:
                record, plaintext = change.registry.rotate_key(key_id, grace=grace)
            except RegistryError as exc:
                raise Conflict(str(exc)) from exc
            change.before = before
            change.after = {"replaced": change.registry.get_key(key_id), "successor": record}
        return record, plaintext

    def revoke_key(self, actor: Actor, key_id: str) -> ApiKey:
        self.get_key(key_id)
        with self._audited(actor, "key.revoke", key_id) as change:
            before = change.registry.get_key(key_id)
            if before.revoked_at is not None:
                raise Conflict(f"key {key_id!r} is already revoked")
            after = change.registry.revoke_key(key_id)
            change.before, change.after = before, after
        return after

    # -- decisions ------------------------------------------------------------------------------------------
    async def list_decisions(self) -> list[Decision]:
        return await self.decisions.list()

    async def add_decision(self, actor: Actor, decision: Decision) -> Decision:
        async with self._audited_decisions(actor, "decision.add", decision.id) as (change, store):
            await store.add(decision)
            if store is self.decisions:
                change.undo = lambda: self.decisions.remove(decision.id)
            change.after = decision
        return decision

    async def remove_decision(self, actor: Actor, decision_id: str) -> Decision:
        async with self._audited_decisions(actor, "decision.remove", decision_id) as (change, store):
            current = next((d for d in await store.list() if d.id == decision_id), None)
            if current is None:
                raise NotFound(f"no decision {decision_id!r} (or it has expired)")
            await store.remove(decision_id)
            if store is self.decisions:
                change.undo = lambda: self.decisions.add(current)
            change.before = current
        return current

    async def set_group(self, actor: Actor, group_id: str, account_ids: Collection[str]) -> list[str]:
        """Make the accounts one group (they then share the group budget); no accounts dissolves it."""
        members = sorted(set(account_ids))
        async with self._audited_decisions(actor, "group.set", f"group:{group_id}") as (change, store):
            before = sorted(await joined.group_members(store, group_id))
            await store.set_group(group_id, members)
            if store is self.decisions:
                change.undo = lambda: self.decisions.set_group(group_id, before)
            change.before, change.after = before, members
        return members

    # -- admin tokens ---------------------------------------------------------------------------------------
    def authenticate(self, plaintext: str) -> AdminToken | None:
        return tokens.authenticate(self._engine, self._secret, plaintext)

    def list_tokens(self) -> list[AdminToken]:
        with self._engine.connect() as conn:
            return tokens.list_all(conn)

    def create_token(self, actor: Actor, name: str, role: Role) -> tuple[AdminToken, str]:
        """A new admin token: the record, and the plaintext, which only the caller ever sees."""
        with self._audited(actor, "token.create") as change:
            try:
                record, plaintext = tokens.create(change.conn, self._secret, name, role)
            except tokens.TokenError as exc:
                raise Conflict(str(exc)) from exc
            change.target, change.after = record.id, record
        return record, plaintext

    def revoke_token(self, actor: Actor, token_id: str) -> AdminToken:
        with self._audited(actor, "token.revoke", token_id) as change:
            try:
                before = tokens.get(change.conn, token_id)
            except tokens.TokenError as exc:
                raise NotFound(str(exc)) from exc
            if before.revoked_at is not None:
                raise Conflict(f"admin token {token_id!r} is already revoked")
            after = tokens.revoke(change.conn, token_id)
            change.before, change.after = before, after
        return after

    # -- the audit log --------------------------------------------------------------------------------------
    def audit_page(self, *, after: int = 0, limit: int = 100) -> list[AuditEntry]:
        return audit.page(self._engine, after=after, limit=limit)

    def audit_tail(self, count: int) -> list[AuditEntry]:
        return audit.tail(self._engine, count)

    def verify_audit(self) -> Verification:
        return audit.verify(self._engine, self._secret)
