"""Decision stores. Reads on the request path are local and synchronous in every backend.

* `MemoryDecisionStore`: the state itself, in process (tests, and the mirror of the others).
* `SqlDecisionStore`: the embedded default; decisions live in the registry database, so the CLI
  can add and remove them while a gateway runs.
* `RedisDecisionStore`: shared by every gateway process behind one Redis.

The persistent stores keep a local mirror that follows a version counter, so every gateway process
sees a change within `refresh_interval` seconds.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import functools
import ipaddress
import logging
import time
from collections.abc import Iterable
from typing import Protocol

import msgspec
import redis.asyncio as aioredis
import sqlalchemy as sa
from redis.exceptions import RedisError

from hydraguard.decide.model import Decision, ScopeKind, normalized_scope_value
from hydraguard.store.migrate import ensure_schema

log = logging.getLogger(__name__)


class DecisionStoreUnavailable(Exception):
    pass


class DecisionStore(Protocol):
    def match(self, *, key_id: str | None, account_id: str | None, ip: str | None) -> list[Decision]: ...
    def groups_of(self, account_id: str) -> frozenset[str]: ...
    async def add(self, decision: Decision) -> Decision: ...
    async def remove(self, decision_id: str) -> bool: ...
    async def list(self) -> list[Decision]: ...
    async def set_group(self, group_id: str, account_ids: Iterable[str]) -> None: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...


_NOTHING: dict[str, Decision] = {}


@functools.lru_cache(maxsize=65_536)
def _address(ip: str) -> tuple[int, int, int]:
    """(IP version, the address as an integer, its bit length): parsed once per recent client address."""
    addr = ipaddress.ip_address(ip)
    return addr.version, int(addr), addr.max_prefixlen


class MemoryDecisionStore:
    def __init__(self) -> None:
        self._by_id: dict[str, Decision] = {}
        self._index: dict[tuple[ScopeKind, str], dict[str, Decision]] = {}
        # CIDR decisions by (IP version, prefix length), then by network address as an integer:
        # a lookup is one dict probe per prefix length in use, however many networks are decided on
        self._networks: dict[tuple[int, int], dict[int, dict[str, Decision]]] = {}
        self._groups: dict[str, set[str]] = {}  # group -> accounts
        self._account_groups: dict[str, frozenset[str]] = {}

    # -- reads (request path) ----------------------------------------------------------------------
    def match(self, *, key_id: str | None, account_id: str | None, ip: str | None) -> list[Decision]:
        index = self._index
        found: list[Decision] = []
        if key_id:
            found += index.get((ScopeKind.KEY, key_id), _NOTHING).values()
        if account_id:
            found += index.get((ScopeKind.ACCOUNT, account_id), _NOTHING).values()
            for group in self._account_groups.get(account_id, ()):
                found += index.get((ScopeKind.GROUP, group), _NOTHING).values()
        if ip:
            found += index.get((ScopeKind.IP, ip), _NOTHING).values()
            if self._networks:
                ip_version, number, bits = _address(ip)
                for (version, prefix), networks in self._networks.items():
                    if version == ip_version:
                        bucket = networks.get(number >> (bits - prefix) << (bits - prefix))
                        if bucket:
                            found += bucket.values()
        if not found:
            return found
        now = time.time()
        return [d for d in found if d.active(now)]

    def groups_of(self, account_id: str) -> frozenset[str]:
        return self._account_groups.get(account_id, frozenset())

    def members_of(self, group_id: str) -> frozenset[str]:
        return frozenset(self._groups.get(group_id, ()))

    # -- writes ------------------------------------------------------------------------------------
    async def add(self, decision: Decision) -> Decision:
        self.put(decision)
        return decision

    async def remove(self, decision_id: str) -> bool:
        return self.discard(decision_id)

    async def list(self) -> list[Decision]:
        now = time.time()
        return sorted((d for d in self._by_id.values() if d.active(now)), key=lambda d: d.created_at)

    async def set_group(self, group_id: str, account_ids: Iterable[str]) -> None:
        self.put_group(group_id, set(account_ids))

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # -- synchronous primitives (also used by the Redis mirror) --------------------------------------
    def put(self, decision: Decision) -> None:
        self.discard(decision.id)
        value = normalized_scope_value(decision.scope, decision.value)
        self._by_id[decision.id] = decision
        if decision.scope is ScopeKind.IP and "/" in value:
            net = ipaddress.ip_network(value)
            by_address = self._networks.setdefault((net.version, net.prefixlen), {})
            by_address.setdefault(int(net.network_address), {})[decision.id] = decision
        else:
            self._index.setdefault((decision.scope, value), {})[decision.id] = decision

    def discard(self, decision_id: str) -> bool:
        old = self._by_id.pop(decision_id, None)
        if old is None:
            return False
        value = normalized_scope_value(old.scope, old.value)
        if old.scope is ScopeKind.IP and "/" in value:
            net = ipaddress.ip_network(value)
            by_address = self._networks[(net.version, net.prefixlen)]
            bucket = by_address[int(net.network_address)]
            del bucket[decision_id]
            if not bucket:
                del by_address[int(net.network_address)]
                if not by_address:
                    del self._networks[(net.version, net.prefixlen)]
            return True
        bucket = self._index[(old.scope, value)]
        del bucket[decision_id]
        if not bucket:
            del self._index[(old.scope, value)]
        return True

    def put_group(self, group_id: str, account_ids: set[str]) -> None:
        for account in self._groups.pop(group_id, set()):
            self._account_groups[account] = self._account_groups.get(account, frozenset()) - {group_id}
            if not self._account_groups[account]:
                del self._account_groups[account]
        if account_ids:
            self._groups[group_id] = set(account_ids)
            for account in account_ids:
                self._account_groups[account] = self._account_groups.get(account, frozenset()) | {group_id}

    def sweep(self) -> int:
        now = time.time()
        expired = [i for i, d in self._by_id.items() if not d.active(now)]
        for decision_id in expired:
            self.discard(decision_id)
        return len(expired)


_decision_decoder = msgspec.json.Decoder(Decision)


class _MirroredStore(abc.ABC):
    """A store whose truth is elsewhere, read through a local mirror reloaded when its version moves."""

    def __init__(self, *, refresh_interval: float) -> None:
        self.refresh_interval = refresh_interval
        self._mirror = MemoryDecisionStore()
        self._version: object = None
        self._task: asyncio.Task[None] | None = None
        self.refresh_failures = 0

    @abc.abstractmethod
    async def _version_now(self) -> object: ...

    @abc.abstractmethod
    async def _snapshot(self) -> tuple[object, dict[str, bytes], dict[str, str]]:
        """(version, decision id -> encoded decision, group id -> comma-separated members)."""

    @abc.abstractmethod
    async def _write(
        self,
        *,
        put: dict[str, bytes] | None = None,
        delete: str | None = None,
        group: tuple[str, list[str]] | None = None,
    ) -> bool:
        """Apply one change and move the version; True if something was deleted or written."""

    @abc.abstractmethod
    async def _purge(self, decision_ids: list[str]) -> None: ...

    def match(self, *, key_id: str | None, account_id: str | None, ip: str | None) -> list[Decision]:
        return self._mirror.match(key_id=key_id, account_id=account_id, ip=ip)

    def groups_of(self, account_id: str) -> frozenset[str]:
        return self._mirror.groups_of(account_id)

    async def add(self, decision: Decision) -> Decision:
        await self._write(put={decision.id: msgspec.json.encode(decision)})
        self._mirror.put(decision)
        return decision

    async def remove(self, decision_id: str) -> bool:
        removed = await self._write(delete=decision_id)
        self._mirror.discard(decision_id)
        return removed

    async def list(self) -> list[Decision]:
        await self.refresh(force=True)
        return await self._mirror.list()

    async def set_group(self, group_id: str, account_ids: Iterable[str]) -> None:
        members = sorted(set(account_ids))
        await self._write(group=(group_id, members))
        self._mirror.put_group(group_id, set(members))

    async def refresh(self, *, force: bool = False) -> bool:
        """Reload the mirror if the stored version moved; True when it reloaded."""
        if not force and await self._version_now() == self._version:
            return False
        version, raw_decisions, raw_groups = await self._snapshot()
        mirror = MemoryDecisionStore()
        now = time.time()
        expired = []
        for decision_id, raw in raw_decisions.items():
            decision = _decision_decoder.decode(raw)
            if decision.active(now):
                mirror.put(decision)
            else:
                expired.append(decision_id)
        for group_id, members in raw_groups.items():
            mirror.put_group(group_id, set(members.split(",")))
        self._mirror, self._version = mirror, version
        if expired:
            with contextlib.suppress(DecisionStoreUnavailable):
                await self._purge(expired)
        return True

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            try:
                await self.refresh()
            except DecisionStoreUnavailable as exc:
                self.refresh_failures += 1
                log.warning("decision store refresh failed, keeping the last known decisions: %s", exc)
            except Exception:  # e.g. a stored decision that no longer decodes: keep following regardless
                self.refresh_failures += 1
                log.exception("decision store refresh failed, keeping the last known decisions")

    async def start(self) -> None:
        await self.refresh(force=True)
        self._task = asyncio.create_task(self._follow())

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        # Cancel until it has stopped: on Python 3.11, a cancellation that lands just as a Redis
        # command completes is swallowed (asyncio.wait_for inside redis-py, CPython gh-86296), and a
        # single cancel() then leaves this waiting forever, hanging the gateway's shutdown.
        while not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=0.1)
        with contextlib.suppress(asyncio.CancelledError):
            await task


class RedisDecisionStore(_MirroredStore):
    """Decisions and group memberships in Redis hashes, with a version counter."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "hg:", refresh_interval: float = 0.25) -> None:
        super().__init__(refresh_interval=refresh_interval)
        self._redis = client
        self._decisions_key = f"{prefix}decisions"
        self._groups_key = f"{prefix}groups"
        self._version_key = f"{prefix}decisions:version"

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 0.25, **kwargs: object) -> RedisDecisionStore:
        client = aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return cls(client, **kwargs)  # type: ignore[arg-type]

    async def _version_now(self) -> object:
        try:
            return await self._redis.get(self._version_key)
        except (RedisError, OSError) as exc:
            raise DecisionStoreUnavailable(str(exc)) from exc

    async def _snapshot(self) -> tuple[object, dict[str, bytes], dict[str, str]]:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.get(self._version_key)
                pipe.hgetall(self._decisions_key)
                pipe.hgetall(self._groups_key)
                version, decisions, groups = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise DecisionStoreUnavailable(str(exc)) from exc
        return (
            version,
            {k.decode(): v for k, v in decisions.items()},
            {k.decode(): v.decode() for k, v in groups.items()},
        )

    async def _write(
        self,
        *,
        put: dict[str, bytes] | None = None,
        delete: str | None = None,
        group: tuple[str, list[str]] | None = None,
    ) -> bool:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                if put:
                    pipe.hset(self._decisions_key, mapping=put)
                if delete:
                    pipe.hdel(self._decisions_key, delete)
                if group:
                    group_id, members = group
                    if members:
                        pipe.hset(self._groups_key, group_id, ",".join(members))
                    else:
                        pipe.hdel(self._groups_key, group_id)
                pipe.incr(self._version_key)
                results = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise DecisionStoreUnavailable(str(exc)) from exc
        return bool(results[0])

    async def _purge(self, decision_ids: list[str]) -> None:
        try:
            await self._redis.hdel(self._decisions_key, *decision_ids)
        except (RedisError, OSError) as exc:
            raise DecisionStoreUnavailable(str(exc)) from exc

    async def close(self) -> None:
        await super().close()
        await self._redis.aclose()


_sql_metadata = sa.MetaData()
_decisions_table = sa.Table(
    "decisions",
    _sql_metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("body", sa.LargeBinary, nullable=False),
)
_groups_table = sa.Table(
    "decision_groups",
    _sql_metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("members", sa.Text, nullable=False),
)
_version_table = sa.Table(
    "decisions_version",
    _sql_metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)


class SqlDecisionStore(_MirroredStore):
    """Decisions in the registry's database (SQLite by default). Calls are short, local and
    synchronous; they run on the event loop only on writes and on a changed version."""

    def __init__(self, engine: sa.Engine, *, refresh_interval: float = 0.25) -> None:
        super().__init__(refresh_interval=refresh_interval)
        self._engine = engine
        ensure_schema(engine)
        with engine.begin() as conn:
            if conn.execute(sa.select(_version_table.c.version)).first() is None:
                conn.execute(_version_table.insert().values(id=1, version=0))

    async def _version_now(self) -> object:
        try:
            with self._engine.connect() as conn:
                return conn.execute(sa.select(_version_table.c.version)).scalar_one()
        except sa.exc.SQLAlchemyError as exc:
            raise DecisionStoreUnavailable(str(exc)) from exc

    async def _snapshot(self) -> tuple[object, dict[str, bytes], dict[str, str]]:
        try:
            with self._engine.connect() as conn:
                version = conn.execute(sa.select(_version_table.c.version)).scalar_one()
                decisions = {r.id: r.body for r in conn.execute(sa.select(_decisions_table))}
                groups = {r.id: r.members for r in conn.execute(sa.select(_groups_table))}
        except sa.exc.SQLAlchemyError as exc:
            raise DecisionStoreUnavailable(str(exc)) from exc
        return version, decisions, groups

    async def _write(
        self,
        *,
        put: dict[str, bytes] | None = None,
        delete: str | None = None,
        group: tuple[str, list[str]] | None = None,
    ) -> bool:
        changed = 0
        try:
            with self._engine.begin() as conn:
                for decision_id, body in (put or {}).items():
                    conn.execute(_decisions_table.delete().where(_decisions_table.c.id == decision_id))
                    conn.execute(_decisions_table.insert().values(id=decision_id, body=body))
                    changed += 1
                if delete:
                    changed += conn.execute(_decisions_table.delete().where(_decisions_table.c.id == delete)).rowcount
                if group:
                    group_id, members = group
                    conn.execute(_groups_table.delete().where(_groups_table.c.id == group_id))
                    if members:
                        conn.execute(_groups_table.insert().values(id=group_id, members=",".join(members)))
                    changed += 1
                conn.execute(_version_table.update().values(version=_version_table.c.version + 1))
        except sa.exc.SQLAlchemyError as exc:
            raise DecisionStoreUnavailable(str(exc)) from exc
        return changed > 0

    async def _purge(self, decision_ids: list[str]) -> None:
        try:
            with self._engine.begin() as conn:
                conn.execute(_decisions_table.delete().where(_decisions_table.c.id.in_(decision_ids)))
        except sa.exc.SQLAlchemyError as exc:
            raise DecisionStoreUnavailable(str(exc)) from exc
