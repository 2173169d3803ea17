"""The operations the admin API and the CLI share. Each mutation commits together with one audit entry:
the change and its entry are in one transaction, so neither exists without the other.

Decisions in Redis (or in memory) cannot join a SQL transaction: they are written inside it, just before the
commit, and undone if the entry cannot be committed.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import cached_property
from typing import Any

import sqlalchemy as sa

from hydraguard.accounts import risk
from hydraguard.accounts import verification as records
from hydraguard.accounts.models import Account, AccountStatus, ApiKey, Org
from hydraguard.accounts.registry import Registry, RegistryError
from hydraguard.accounts.risk import SIGNUP_SOURCE, SignupRecord, SignupRequest
from hydraguard.accounts.status import VerificationStatus
from hydraguard.accounts.tiers import DAY, Standing, compute_tier
from hydraguard.accounts.verification import (
    DEFAULT_ACCOUNT_TYPE,
    LEVELS,
    LevelReport,
    Outcome,
    PaymentEvent,
    PaymentHistory,
    PaymentOutcome,
    Source,
)
from hydraguard.admin import audit, joined, tokens
from hydraguard.admin.audit import Actor, AuditEntry, Verification
from hydraguard.admin.tokens import AdminToken, Role
from hydraguard.config import IntelConfig, VerificationConfig
from hydraguard.decide import policy
from hydraguard.decide.model import Decision, DecisionType, ScopeKind
from hydraguard.decide.store import DecisionStore
from hydraguard.detect.campaigns import Campaign, CampaignNotFound, CampaignStatus, CampaignStore, TimelineEntry
from hydraguard.detect.rules import Rule, RuleSet
from hydraguard.intel.campaign_collection import CampaignCollection, campaign_report
from hydraguard.intel.export import campaign_bundle
from hydraguard.intel.feeds import FeedError, FeedFormat, FeedLimits, parse_feed
from hydraguard.intel.index import IntelIndex
from hydraguard.intel.indicators import Indicator, IndicatorError, IndicatorKind, make_indicator
from hydraguard.intel.store import IntelStore
from hydraguard.limits.policy import LimitSet
from hydraguard.store.migrate import ensure_schema


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
    def __init__(
        self,
        registry: Registry,
        decisions: DecisionStore,
        *,
        secret: bytes,
        tiers: Collection[str],
        verification: VerificationConfig | None = None,
    ) -> None:
        self.registry = registry
        self.verification = verification or VerificationConfig()
        self._intel: tuple[int, IntelIndex] | None = None
        self.decisions = decisions
        self._engine = registry.engine
        self._secret = secret
        self._tiers = frozenset(tiers)
        ensure_schema(self._engine)
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

    # -- verification, tiers and signup risk (docs/accounts.md) ---------------------------------------------
    @cached_property
    def _intel_store(self) -> IntelStore:
        return IntelStore(self._engine)

    def _intel_index(self) -> IntelIndex:
        """The threat-intel matcher, rebuilt only when the indicator set changed."""
        version = self._intel_store.version()
        if self._intel is None or self._intel[0] != version:
            self._intel = (version, self._intel_store.index())
        return self._intel[1]

    def webhook_secret(self) -> bytes | None:
        value = os.environ.get(self.verification.webhook_secret_env, "")
        return value.encode() if value else None

    async def signup(
        self,
        actor: Actor,
        request: SignupRequest,
        *,
        org_id: str | None = None,
        org_name: str | None = None,
        claim: Callable[[sa.Connection], None] | None = None,
    ) -> tuple[Account, SignupRecord, Decision | None]:
        """Create an account (in `org_id`, or in a new org `org_name`) with its signup risk assessed: the score
        sets its starting tier, and a challenge decision when it must verify before first use. `claim` runs first
        in the transaction (a webhook's replay guard)."""
        config = self.verification
        if (org_id is None) == (org_name is None):
            raise Invalid("give org_id (an existing org) or org_name (a new org), not both")
        type_rule = config.account_types.get(request.account_type)  # type: ignore[call-overload]
        if type_rule is None:
            raise Invalid(
                f"unknown account type {request.account_type!r}; the config defines {sorted(config.account_types)}"
            )
        self._check_tier(config.base_tier)
        if org_id is not None:
            self.get_org(org_id)
        intel = self._intel_index()
        async with self._audited_decisions(actor, "account.signup") as (change, store):
            if claim is not None:
                claim(change.conn)
            org_id = org_id or change.registry.create_org(org_name, config.base_tier).id  # type: ignore[arg-type]
            try:
                facts = risk.facts_of(self._secret, org_id, request)
            except risk.SignupError as exc:
                raise Invalid(str(exc)) from exc
            now = time.time()
            assessment = risk.assess(change.conn, facts, config, intel, now)
            fresh = Standing(age_days=0.0, payments=PaymentHistory(), decisions=0)
            starting = compute_tier(config, request.account_type, (), fresh, review=assessment.review)
            self._check_tier(starting.tier)
            account = change.registry.create_account(
                org_id,
                tier=starting.tier,
                signup_at=now,
                signup_ip=facts.ip,
                email_domain=facts.email_domain,
                payment_method=request.payment_method,
            )
            step_up = [level for level in config.step_up_levels if level not in type_rule.required]
            record = SignupRecord(
                account_id=account.id,
                at=now,
                account_type=request.account_type,
                region=facts.region,
                provider_ref=request.provider_ref,
                score=assessment.score,
                signals=assessment.signals,
                review=assessment.review,
                challenged=assessment.challenged,
                verification_required=assessment.challenged or type_rule.before_first_use,
                required_levels=[*type_rule.required, *(step_up if assessment.challenged else [])],
            )
            risk.store(change.conn, record, facts)
            challenge = None
            if record.verification_required:
                why = "; ".join(s.detail for s in record.signals) or f"the {request.account_type} pathway"
                challenge = Decision(
                    type=DecisionType.CHALLENGE,
                    scope=ScopeKind.ACCOUNT,
                    value=account.id,
                    reason=f"verify {', '.join(record.required_levels)} before first use ({why})",
                    source=SIGNUP_SOURCE,
                    created_at=now,
                )
                await store.add(challenge)
                if store is self.decisions:
                    change.undo = lambda: self.decisions.remove(challenge.id)
            change.target = account.id
            change.after = {"account": account, "signup": record, "challenge": challenge}
        return account, record, challenge

    async def report_verification(
        self,
        actor: Actor,
        account_id: str,
        level: str,
        outcome: Outcome,
        *,
        source: Source = Source.ADMIN,
        provider_ref: str | None = None,
        claim: Callable[[sa.Connection], None] | None = None,
    ) -> VerificationStatus:
        """Record the provider's verdict on one level. A success may lift the account's challenges (those whose
        levels it now holds); either way the tier is recomputed."""
        if level not in LEVELS:
            raise Invalid(f"unknown verification level {level!r}; the levels are {', '.join(LEVELS)}")
        self.get_account(account_id)
        report = LevelReport(
            account_id=account_id, level=level, outcome=outcome, source=source, provider_ref=provider_ref
        )
        async with self._audited_decisions(actor, "verification.report", account_id) as (change, store):
            if claim is not None:
                claim(change.conn)
            records.record_level(change.conn, report)
            lifted = await self._lift_challenges(change, store, account_id) if outcome is Outcome.VERIFIED else []
            before, after = await self._retier(change, store, account_id)
            change.before = {"tier": before.tier}
            change.after = {"report": report, "tier": after.tier, "lifted": [d.id for d in lifted]}
        return await self.verification_status(account_id)

    async def record_payment(
        self,
        actor: Actor,
        account_id: str,
        outcome: PaymentOutcome,
        *,
        source: Source = Source.ADMIN,
        provider_ref: str | None = None,
        claim: Callable[[sa.Connection], None] | None = None,
    ) -> VerificationStatus:
        """Record a payment's outcome (succeeded, failed, chargeback) and recompute the tier."""
        self.get_account(account_id)
        event = PaymentEvent(account_id=account_id, outcome=outcome, source=source, provider_ref=provider_ref)
        async with self._audited_decisions(actor, "payment.record", account_id) as (change, store):
            if claim is not None:
                claim(change.conn)
            records.record_payment(change.conn, event)
            before, after = await self._retier(change, store, account_id)
            change.before = {"tier": before.tier}
            change.after = {"payment": event, "tier": after.tier}
        return await self.verification_status(account_id)

    async def recompute_tier(self, actor: Actor, account_id: str) -> VerificationStatus:
        """Write the computed tier to the account (audited when it changes): age alone can move it."""
        status = await self.verification_status(account_id)
        if status.computed.tier != status.tier:
            async with self._audited_decisions(actor, "account.retier", account_id) as (change, store):
                before, after = await self._retier(change, store, account_id)
                change.before, change.after = {"tier": before.tier}, {"tier": after.tier}
            status = await self.verification_status(account_id)
        return status

    async def verification_status(self, account_id: str) -> VerificationStatus:
        account = self.get_account(account_id)
        with self._engine.connect() as conn:
            return await self._status(conn, self.decisions, account)

    async def _status(self, conn: sa.Connection, store: DecisionStore, account: Account) -> VerificationStatus:
        config = self.verification
        signup = risk.load(conn, account.id)
        account_type = signup.account_type if signup is not None else DEFAULT_ACCOUNT_TYPE
        held = records.held_levels(records.reports(conn, account.id))
        decisions = await store.list()
        groups = store.groups_of(account.id)
        against = [
            d
            for d in decisions
            if d.type is not DecisionType.ALLOW
            and (
                (d.scope is ScopeKind.ACCOUNT and d.value == account.id)
                or (d.scope is ScopeKind.GROUP and d.value in groups)
            )
        ]
        payments = records.payment_history(conn, account.id)
        standing = Standing(age_days=(time.time() - account.signup_at) / DAY, payments=payments, decisions=len(against))
        computed = compute_tier(config, account_type, held, standing, review=signup is not None and signup.review)
        return VerificationStatus(
            account_id=account.id,
            account_type=account_type,
            tier=account.tier,
            computed=computed,
            levels=list(held.values()),
            required_levels=list(config.account_types[account_type].required),  # type: ignore[index]
            payments=payments,
            standing=standing,
            challenges=[d for d in against if d.type is DecisionType.CHALLENGE],
            signup=signup,
        )

    async def _retier(self, change: _Change, store: DecisionStore, account_id: str) -> tuple[Account, Account]:
        before = change.registry.get_account(account_id)
        status = await self._status(change.conn, store, before)
        self._check_tier(status.computed.tier)
        after = (
            before
            if status.computed.tier == before.tier
            else change.registry.update_account(account_id, tier=status.computed.tier)
        )
        return before, after

    async def _lift_challenges(self, change: _Change, store: DecisionStore, account_id: str) -> list[Decision]:
        """Remove the account's challenges whose levels it now holds: a signup challenge asks for the levels
        chosen at signup; any other (detection, an analyst) for the type's levels and the step-up levels."""
        status = await self._status(change.conn, store, change.registry.get_account(account_id))
        held = {report.level for report in status.levels}
        step_up = [*status.required_levels, *self.verification.step_up_levels]
        lifted = []
        for challenge in status.challenges:
            if challenge.scope is not ScopeKind.ACCOUNT:
                continue  # a group's challenge is the campaign's, lifted with it
            needed = status.signup.required_levels if challenge.source == SIGNUP_SOURCE and status.signup else step_up
            if all(level in held for level in needed):
                await store.remove(challenge.id)
                lifted.append(challenge)
        if lifted and store is self.decisions:

            async def undo() -> None:
                for decision in lifted:
                    await self.decisions.add(decision)

            change.undo = undo
        return lifted

    # -- campaigns: detection's findings, worked by analysts ------------------------------------------------
    @cached_property
    def campaigns(self) -> CampaignStore:
        return CampaignStore(self._engine)

    def list_campaigns(self, status: CampaignStatus | None = None) -> list[Campaign]:
        return self.campaigns.list(status)

    def get_campaign(self, campaign_id: str) -> Campaign:
        try:
            return self.campaigns.get(campaign_id)
        except CampaignNotFound as exc:
            raise NotFound(f"no campaign {campaign_id!r}") from exc

    def campaign_timeline(self, campaign_id: str) -> list[TimelineEntry]:
        self.get_campaign(campaign_id)
        return self.campaigns.timeline(campaign_id)

    def note_campaign(self, actor: Actor, campaign_id: str, text: str) -> None:
        self.get_campaign(campaign_id)
        if not text.strip():
            raise Invalid("a note needs some text")
        with self._audited(actor, "campaign.note", campaign_id) as change:
            _campaigns_in(self.campaigns, change.conn).add_note(campaign_id, actor.name, text)
            change.after = {"note": text}

    async def set_campaign_status(
        self, actor: Actor, campaign_id: str, status: CampaignStatus, note: str = ""
    ) -> Campaign:
        """Confirm, dismiss or reopen. Dismissing also lifts what was enforced on the campaign (detection does not
        enforce a dismissed subject again)."""
        before = self.get_campaign(campaign_id)
        if before.status is status:
            raise Conflict(f"campaign {campaign_id!r} is already {status}")
        verb = {CampaignStatus.CONFIRMED: "confirm", CampaignStatus.DISMISSED: "dismiss"}.get(status, "reopen")
        async with self._audited_decisions(actor, f"campaign.{verb}", campaign_id) as (change, store):
            lifted = await self._lift(change, store, before) if status is CampaignStatus.DISMISSED else []
            after = _campaigns_in(self.campaigns, change.conn).set_status(campaign_id, status, actor.name, note)
            change.before = {"status": str(before.status)}
            change.after = {"status": str(status), "note": note, "lifted": [d.id for d in lifted]}
        return after

    async def enforce_campaign(
        self, actor: Actor, campaign_id: str, kind: DecisionType, *, ttl: float | None = None, reason: str = ""
    ) -> Decision:
        """One decision on the whole campaign: its accounts become one group (`decide.policy.group_id`), and the
        decision applies to the group (to the account, for a one-account campaign). Repeating it renews it."""
        campaign = self.get_campaign(campaign_id)
        if kind is DecisionType.ALLOW:
            raise Invalid("a campaign is blocked, throttled, challenged or degraded; lift it to undo that")
        if campaign.status is CampaignStatus.DISMISSED:
            raise Conflict(f"campaign {campaign_id!r} is dismissed; reopen or confirm it first")
        defaults = policy.PolicySettings()
        cluster = campaign.level == "cluster"
        # a cluster's accounts as one group; a request rule's key or address; else the campaign's one account
        scope, value = (
            (ScopeKind.GROUP, policy.group_id(campaign_id))
            if cluster
            else policy.request_subject(campaign_id) or (ScopeKind.ACCOUNT, campaign.accounts[0])
        )
        now = time.time()
        decision = Decision(
            id=policy.decision_id(f"analyst:{kind}", campaign_id),
            type=kind,
            scope=scope,
            value=value,
            reason=reason or f"campaign {campaign_id}: {kind} by {actor.name}",
            source=actor.name,
            created_at=now,
            expires_at=now + ttl if ttl else None,
            limits=defaults.throttle if kind is DecisionType.THROTTLE else None,
            profile=defaults.degrade_profile if kind is DecisionType.DEGRADE else None,
        )
        async with self._audited_decisions(actor, f"campaign.{kind}", campaign_id) as (change, store):
            members: list[str] = []
            if cluster:
                group_before = sorted(await joined.group_members(store, decision.value))
                members = list(campaign.accounts)
                await store.set_group(decision.value, members)
            await store.add(decision)
            if store is self.decisions:

                async def undo() -> None:
                    await self.decisions.remove(decision.id)
                    if cluster:
                        await self.decisions.set_group(decision.value, group_before)

                change.undo = undo
            change.after = {"decision": decision, "group_members": len(members)}
        return decision

    async def lift_campaign(self, actor: Actor, campaign_id: str) -> list[Decision]:
        """Remove every decision in force on the campaign (detection's and analysts') and dissolve its group."""
        campaign = self.get_campaign(campaign_id)
        async with self._audited_decisions(actor, "campaign.lift", campaign_id) as (change, store):
            lifted = await self._lift(change, store, campaign)
            change.before = lifted
        return lifted

    async def _lift(self, change: _Change, store: DecisionStore, campaign: Campaign) -> list[Decision]:
        group = policy.group_id(campaign.id)
        named = policy.request_subject(campaign.id)
        subject = {group} if campaign.level == "cluster" else {named[1] if named else campaign.id}
        # a cluster rule that covers only some members acts on them one by one (decide.policy); an account's own
        # account-level rules are another subject, and stay
        by_rule = {policy.SOURCE_PREFIX + rule for rule in campaign.rules} if campaign.level == "cluster" else set()
        accounts = set(campaign.accounts)
        lifted = [
            d
            for d in await store.list()
            if d.value in subject or (d.source in by_rule and d.scope is ScopeKind.ACCOUNT and d.value in accounts)
        ]
        members = sorted(await joined.group_members(store, group))
        for decision in lifted:
            await store.remove(decision.id)
        if members:
            await store.set_group(group, ())
        if store is self.decisions:

            async def undo() -> None:
                for decision in lifted:
                    await self.decisions.add(decision)
                if members:
                    await self.decisions.set_group(group, members)

            change.undo = undo
        return lifted

    def decisions_for(self, decisions: list[Decision], campaign: Campaign) -> list[Decision]:
        """Which of these decisions act on the campaign: its group, or its accounts."""
        targets = {policy.group_id(campaign.id), campaign.id, *campaign.accounts}
        return [d for d in decisions if d.value in targets]

    def export_campaign(self, campaign_id: str, *, producer: str = "hydraguard") -> dict[str, Any]:
        """The campaign as a STIX 2.1 bundle (`intel.export`): what `campaign_report` may share of it (payment,
        network and domain indicators, a member count, a hashed name), never who the members are."""
        report = campaign_report(self.get_campaign(campaign_id))
        return json.loads(campaign_bundle(report, producer=producer).serialize())

    # -- rules ----------------------------------------------------------------------------------------------
    def list_rules(self) -> list[tuple[Rule, dict[str, int]]]:
        """The shipped rule pack, each rule with its campaigns by status (how often it fired, and the verdicts)."""
        counts = self.campaigns.calibration()
        empty = {str(s): 0 for s in CampaignStatus}
        return [(rule, counts.get(rule.id, empty)) for rule in RuleSet.default().rules]

    # -- threat intel -----------------------------------------------------------------------------------------
    intel_settings: IntelConfig = IntelConfig()  # `open_services` gives the configured ones

    def intel_summary(self) -> dict[str, int]:
        return {"indicators": self._intel_store.count(), "version": self._intel_store.version()}

    def list_indicators(
        self, kind: IndicatorKind | None = None, *, after: str = "", limit: int = 100
    ) -> list[Indicator]:
        return self._intel_store.page(kind, after=after, limit=limit)

    def get_indicator(self, indicator_id: str) -> Indicator:
        found = self._intel_store.get(indicator_id)
        if found is None:
            raise NotFound(f"no indicator {indicator_id!r}")
        return found

    def add_indicator(
        self,
        actor: Actor,
        kind: IndicatorKind,
        value: str,
        *,
        confidence: int = 50,
        expires_at: float | None = None,
        description: str = "",
    ) -> Indicator:
        """One indicator, its source the actor; merged into the known one of the same kind and value."""
        try:
            indicator = make_indicator(
                kind, value, source=actor.name, confidence=confidence, expires_at=expires_at, description=description
            )
        except IndicatorError as exc:
            raise Invalid(str(exc)) from exc
        with self._audited(actor, "intel.add", indicator.id) as change:
            store = _intel_in(self._intel_store, change.conn)
            change.before = store.get(indicator.id)
            store.apply([indicator])
            change.after = merged = store.get(indicator.id)
        assert merged is not None
        return merged

    def remove_indicator(self, actor: Actor, indicator_id: str) -> Indicator:
        with self._audited(actor, "intel.remove", indicator_id) as change:
            store = _intel_in(self._intel_store, change.conn)
            before = store.get(indicator_id)
            if before is None:
                raise NotFound(f"no indicator {indicator_id!r}")
            store.remove(indicator_id)
            change.before = before
        return before

    def import_feed(
        self,
        actor: Actor,
        data: bytes,
        format: FeedFormat,
        *,
        source: str,
        kind: IndicatorKind | None = None,
        confidence: int = 50,
    ) -> dict[str, Any]:
        """A feed applied all or nothing: Invalid with the parse report if any entry is bad, else its counts."""
        limits = FeedLimits(
            max_bytes=self.intel_settings.max_feed_bytes, max_indicators=self.intel_settings.max_feed_indicators
        )
        try:
            feed = parse_feed(data, format, source=source, kind=kind, confidence=confidence, limits=limits)
        except FeedError as exc:
            raise Invalid(str(exc)) from exc
        with self._audited(actor, "intel.import", f"feed:{source}") as change:
            applied = _intel_in(self._intel_store, change.conn).apply(feed.indicators)
            change.after = report = {
                "feed": feed.name,
                "parsed": len(feed.indicators),
                "added": applied.added,
                "updated": applied.updated,
                "skipped": feed.skipped_total,
            }
        return report

    @cached_property
    def campaign_collection(self) -> CampaignCollection:
        """The TAXII collection of campaigns (`/taxii2/`), as `[intel]` configures it."""
        return CampaignCollection(
            self.campaigns,
            self._engine,
            producer=self.intel_settings.producer,
            open_min_score=self.intel_settings.export_open_min_score if self.intel_settings.export_open else None,
        )


# detection's evidence kinds (detect.linkage.Evidence) as intel indicator kinds; a template's evidence is one
# MinHash band, not the whole signature intel exchanges, so it is not exported
def _campaigns_in(store: CampaignStore, conn: sa.Connection) -> CampaignStore:
    """The campaign store on the audited transaction's connection (as `joined` does for the registry)."""
    joined_store = copy.copy(store)
    joined_store._engine = joined._JoinedEngine(conn)  # type: ignore[assignment]
    return joined_store


def _intel_in(store: IntelStore, conn: sa.Connection) -> IntelStore:
    """The indicator store on the audited transaction's connection (as `joined` does for the registry)."""
    joined_store = copy.copy(store)
    joined_store.engine = joined._JoinedEngine(conn)  # type: ignore[assignment]
    return joined_store
