"""Decision stores: one suite over the memory, SQL and Redis stores, plus `resolve()` and Redis faults."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa

from hydraguard.decide.model import NO_DECISION, Decision, DecisionType, ScopeKind, resolve
from hydraguard.decide.store import (
    DecisionStore,
    DecisionStoreUnavailable,
    MemoryDecisionStore,
    RedisDecisionStore,
    SqlDecisionStore,
)
from hydraguard.limits.policy import LimitSet

REFRESH = 0.05  # seconds between version checks of the persistent stores' follow loops

MakeStore = Callable[..., Awaitable[Any]]


def decision(
    type: DecisionType = DecisionType.BLOCK, scope: ScopeKind = ScopeKind.ACCOUNT, value: str = "acct_1", **kw: Any
) -> Decision:
    if type is DecisionType.THROTTLE and "limits" not in kw:
        kw["limits"] = LimitSet(rpm=1)
    return Decision(type=type, scope=scope, value=value, reason="test", **kw)


def ids(found: list[Decision]) -> set[str]:
    return {d.id for d in found}


@pytest.fixture
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeStore]:
    """A factory of started stores of the parametrized kind; every store it makes shares one backing
    state (as two gateway processes would), except the memory store, which is its own state."""
    kind = request.param
    opened: list[Any] = []
    engines: list[sa.Engine] = []

    async def make(refresh_interval: float = REFRESH) -> Any:
        if kind == "memory":
            store: Any = MemoryDecisionStore()
        elif kind in ("sql", "sql-postgresql"):
            url = f"sqlite:///{tmp_path}/decisions.db" if kind == "sql" else request.getfixturevalue("postgres_url")
            engine = sa.create_engine(url)
            engines.append(engine)
            store = SqlDecisionStore(engine, refresh_interval=refresh_interval)
        else:
            store = RedisDecisionStore.from_url(
                request.getfixturevalue("redis_url"),
                prefix=request.getfixturevalue("redis_prefix"),
                refresh_interval=refresh_interval,
                timeout=5.0,
            )
        await store.start()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()
    for engine in engines:
        engine.dispose()


every_store = pytest.mark.parametrize("open_store", ["memory", "sql", "sql-postgresql", "redis"], indirect=True)
shared_stores = pytest.mark.parametrize("open_store", ["sql", "sql-postgresql", "redis"], indirect=True)


@pytest.fixture
async def store(open_store: MakeStore) -> DecisionStore:
    return await open_store()


# -- matching ----------------------------------------------------------------------------------------------------
@every_store
async def test_match_by_key_account_and_ip(store: DecisionStore) -> None:
    by_key = await store.add(decision(scope=ScopeKind.KEY, value="key_1"))
    by_account = await store.add(decision(DecisionType.CHALLENGE, ScopeKind.ACCOUNT, "acct_1"))
    by_ip = await store.add(decision(DecisionType.DEGRADE, ScopeKind.IP, "192.0.2.7", profile="short"))
    assert ids(store.match(key_id="key_1", account_id=None, ip=None)) == {by_key.id}
    assert ids(store.match(key_id=None, account_id="acct_1", ip=None)) == {by_account.id}
    assert ids(store.match(key_id=None, account_id=None, ip="192.0.2.7")) == {by_ip.id}
    assert ids(store.match(key_id="key_1", account_id="acct_1", ip="192.0.2.7")) == {by_key.id, by_account.id, by_ip.id}
    assert store.match(key_id="key_2", account_id="acct_2", ip="192.0.2.8") == []
    assert store.match(key_id=None, account_id=None, ip=None) == []
    # a scope's value only matches that scope
    assert store.match(key_id="acct_1", account_id="key_1", ip=None) == []
    (found,) = store.match(key_id=None, account_id=None, ip="192.0.2.7")
    assert found == by_ip  # the whole decision comes back, unchanged


@every_store
async def test_single_addresses_are_normalized(store: DecisionStore) -> None:
    v4 = await store.add(decision(scope=ScopeKind.IP, value="198.51.100.9/32"))
    v6 = await store.add(decision(scope=ScopeKind.IP, value="2001:0db8:0000:0000:0000:0000:0000:0001"))
    assert ids(store.match(key_id=None, account_id=None, ip="198.51.100.9")) == {v4.id}
    assert ids(store.match(key_id=None, account_id=None, ip="2001:db8::1")) == {v6.id}
    assert store.match(key_id=None, account_id=None, ip="2001:db8::2") == []


@every_store
async def test_cidr_matching_v4_and_v6(store: DecisionStore) -> None:
    net4 = await store.add(decision(scope=ScopeKind.IP, value="10.1.0.0/16"))
    loose4 = await store.add(decision(scope=ScopeKind.IP, value="172.16.5.77/24"))  # host bits set
    net6 = await store.add(decision(scope=ScopeKind.IP, value="2001:db8:abcd::/48"))

    def at(ip: str) -> set[str]:
        return ids(store.match(key_id=None, account_id=None, ip=ip))

    assert at("10.1.0.0") == at("10.1.255.255") == at("10.1.2.3") == {net4.id}
    assert at("10.2.0.1") == at("10.0.255.255") == set()
    assert at("172.16.5.1") == {loose4.id} and at("172.16.6.1") == set()
    assert at("2001:db8:abcd::1") == at("2001:db8:abcd:ffff:ffff:ffff:ffff:ffff") == {net6.id}
    assert at("2001:db8:abce::1") == set()
    assert at("::ffff:10.1.2.3") == set()  # a v6 address is never in a v4 network
    wide = await store.add(decision(scope=ScopeKind.IP, value="10.0.0.0/8"))
    exact = await store.add(decision(scope=ScopeKind.IP, value="10.1.2.3"))
    assert at("10.1.2.3") == {net4.id, wide.id, exact.id}
    assert await store.remove(net4.id)
    assert at("10.1.2.3") == {wide.id, exact.id}


@every_store
async def test_group_membership(store: DecisionStore) -> None:
    on_group = await store.add(decision(DecisionType.THROTTLE, ScopeKind.GROUP, "grp_1"))
    await store.set_group("grp_1", ["acct_a", "acct_b"])
    assert ids(store.match(key_id=None, account_id="acct_a", ip=None)) == {on_group.id}
    assert ids(store.match(key_id=None, account_id="acct_b", ip=None)) == {on_group.id}
    assert store.match(key_id=None, account_id="acct_c", ip=None) == []
    assert store.groups_of("acct_a") == frozenset({"grp_1"})
    assert store.groups_of("acct_c") == frozenset()

    await store.set_group("grp_2", ["acct_a"])  # an account may be in several groups
    assert store.groups_of("acct_a") == frozenset({"grp_1", "grp_2"})

    await store.set_group("grp_1", ["acct_b", "acct_c"])  # replaces the whole membership
    assert store.match(key_id=None, account_id="acct_a", ip=None) == []
    assert ids(store.match(key_id=None, account_id="acct_c", ip=None)) == {on_group.id}
    assert store.groups_of("acct_a") == frozenset({"grp_2"})

    await store.set_group("grp_1", [])  # removes the group
    assert store.match(key_id=None, account_id="acct_b", ip=None) == []
    assert store.groups_of("acct_b") == store.groups_of("acct_c") == frozenset()
    assert store.groups_of("acct_a") == frozenset({"grp_2"})

    await store.set_group("grp_1", ["acct_a"])  # and the decision on the group applies again
    assert ids(store.match(key_id=None, account_id="acct_a", ip=None)) == {on_group.id}


# -- lifetime ---------------------------------------------------------------------------------------------------------
@every_store
async def test_expired_decisions_are_not_matched(store: DecisionStore) -> None:
    past = await store.add(decision(expires_at=time.time() - 1))
    soon = await store.add(decision(DecisionType.CHALLENGE, expires_at=time.time() + 0.3))
    forever = await store.add(decision(DecisionType.DEGRADE, profile="p"))
    assert ids(store.match(key_id=None, account_id="acct_1", ip=None)) == {soon.id, forever.id}
    assert ids(await store.list()) == {soon.id, forever.id}
    deadline = time.monotonic() + 3
    while soon.id in ids(store.match(key_id=None, account_id="acct_1", ip=None)):
        assert time.monotonic() < deadline, "an expired decision was still matched"
        await asyncio.sleep(0.05)
    assert ids(store.match(key_id=None, account_id="acct_1", ip=None)) == {forever.id}
    assert ids(await store.list()) == {forever.id}
    assert past.id not in ids(await store.list())


@every_store
async def test_remove(store: DecisionStore) -> None:
    first = await store.add(decision())
    second = await store.add(decision(DecisionType.CHALLENGE))
    assert await store.remove(first.id) is True
    assert await store.remove(first.id) is False
    assert await store.remove("dec_unknown") is False
    assert ids(store.match(key_id=None, account_id="acct_1", ip=None)) == {second.id}
    assert ids(await store.list()) == {second.id}


@every_store
async def test_adding_a_decision_again_replaces_it(store: DecisionStore) -> None:
    original = await store.add(decision(scope=ScopeKind.IP, value="10.9.0.0/16"))
    moved = msgspec.structs.replace(original, value="192.0.2.1", reason="moved")
    await store.add(moved)
    assert store.match(key_id=None, account_id=None, ip="10.9.1.1") == []
    assert store.match(key_id=None, account_id=None, ip="192.0.2.1") == [moved]
    assert await store.list() == [moved]


@every_store
async def test_list_is_ordered_by_creation(store: DecisionStore) -> None:
    now = time.time()
    late = await store.add(decision(created_at=now - 1))
    early = await store.add(decision(DecisionType.CHALLENGE, created_at=now - 10))
    middle = await store.add(decision(DecisionType.DEGRADE, created_at=now - 5, profile="p"))
    assert [d.id for d in await store.list()] == [early.id, middle.id, late.id]


@every_store
async def test_resolution_through_the_store(store: DecisionStore) -> None:
    now = time.time()
    await store.add(decision(DecisionType.CHALLENGE, ScopeKind.KEY, "key_1", created_at=now))
    block = await store.add(decision(DecisionType.BLOCK, ScopeKind.IP, "10.0.0.0/8", created_at=now - 60))
    resolution = resolve(store.match(key_id="key_1", account_id="acct_1", ip="10.0.0.1"))
    assert resolution.refusal == block  # block beats a newer challenge
    exemption = await store.add(decision(DecisionType.ALLOW, ScopeKind.ACCOUNT, "acct_1"))
    assert resolve(store.match(key_id="key_1", account_id="acct_1", ip="10.0.0.1")) == NO_DECISION
    assert await store.remove(exemption.id)
    assert resolve(store.match(key_id="key_1", account_id="acct_1", ip="10.0.0.1")).refusal == block


# -- several processes on one backing store ----------------------------------------------------------------------------
@shared_stores
async def test_another_instance_sees_changes_after_refresh(open_store: MakeStore) -> None:
    writer, reader = await open_store(), await open_store(refresh_interval=3600.0)  # reader: no follow loop
    assert await reader.refresh() is False  # nothing changed since it started

    added = await writer.add(decision(scope=ScopeKind.KEY, value="key_9"))
    assert reader.match(key_id="key_9", account_id=None, ip=None) == []  # not before a refresh
    assert await reader.refresh() is True
    assert reader.match(key_id="key_9", account_id=None, ip=None) == [added]
    assert await reader.refresh() is False

    await writer.set_group("grp_9", ["acct_9"])
    assert await reader.refresh() is True
    assert reader.groups_of("acct_9") == frozenset({"grp_9"})

    assert await writer.remove(added.id)
    assert await reader.refresh() is True
    assert reader.match(key_id="key_9", account_id=None, ip=None) == []
    assert ids(await reader.list()) == set()

    # the reader writes too, and the writer sees it
    mine = await reader.add(decision(scope=ScopeKind.IP, value="2001:db8::/32"))
    assert await writer.refresh() is True
    assert writer.match(key_id=None, account_id=None, ip="2001:db8::5") == [mine]


@shared_stores
async def test_the_follow_loop_picks_up_changes(open_store: MakeStore) -> None:
    writer, follower = await open_store(), await open_store()

    async def seen(predicate: Callable[[], bool]) -> float:
        started = time.monotonic()
        while not predicate():
            assert time.monotonic() - started < 2.0, "the follower never saw the change"
            await asyncio.sleep(REFRESH / 5)
        return time.monotonic() - started

    added = await writer.add(decision(DecisionType.BLOCK, ScopeKind.ACCOUNT, "acct_f"))
    lag = await seen(lambda: follower.match(key_id=None, account_id="acct_f", ip=None) == [added])
    assert lag < 1.0
    await writer.set_group("grp_f", ["acct_g"])
    await seen(lambda: follower.groups_of("acct_g") == frozenset({"grp_f"}))
    await writer.remove(added.id)
    await seen(lambda: follower.match(key_id=None, account_id="acct_f", ip=None) == [])


@shared_stores
async def test_a_fresh_instance_loads_everything_on_start(open_store: MakeStore) -> None:
    writer = await open_store()
    kept = await writer.add(decision(DecisionType.THROTTLE, ScopeKind.GROUP, "grp_s", limits=LimitSet(rpm=5, tpm=9)))
    await writer.add(decision(expires_at=time.time() - 5))
    await writer.set_group("grp_s", ["acct_s1", "acct_s2"])
    late = await open_store()
    assert late.match(key_id=None, account_id="acct_s2", ip=None) == [kept]
    assert late.match(key_id=None, account_id="acct_s2", ip=None)[0].limits == LimitSet(rpm=5, tpm=9)
    assert await late.list() == [kept]


@shared_stores
async def test_refresh_purges_expired_decisions_from_the_backing_store(open_store: MakeStore) -> None:
    writer = await open_store()
    gone = await writer.add(decision(expires_at=time.time() - 5))
    kept = await writer.add(decision(DecisionType.CHALLENGE))
    assert await writer.refresh(force=True)
    _, stored, _ = await writer._snapshot()
    assert set(stored) == {kept.id}
    assert gone.id not in stored


# -- Redis unavailable -------------------------------------------------------------------------------------------------
async def test_redis_store_down_at_start_raises_and_a_running_one_keeps_its_decisions(own_redis) -> None:
    proc, url = own_redis
    running = RedisDecisionStore.from_url(url, prefix="hg:", refresh_interval=REFRESH, timeout=0.25)
    await running.start()
    block = await running.add(decision(DecisionType.BLOCK, ScopeKind.IP, "203.0.113.0/24"))
    await running.set_group("grp_r", ["acct_r"])
    proc.kill()
    proc.wait(timeout=10)
    try:
        late = RedisDecisionStore.from_url(url, prefix="hg:", refresh_interval=REFRESH, timeout=0.25)
        started = time.monotonic()
        with pytest.raises(DecisionStoreUnavailable):
            await late.start()
        assert time.monotonic() - started < 2.0
        await late.close()

        deadline = time.monotonic() + 5
        while running.refresh_failures < 2:  # the follow loop has tried, and failed, more than once
            assert time.monotonic() < deadline, "the follow loop never noticed Redis was gone"
            await asyncio.sleep(REFRESH)
        assert running._task is not None and not running._task.done()  # and keeps following
        assert running.match(key_id=None, account_id=None, ip="203.0.113.9") == [block]
        assert running.groups_of("acct_r") == frozenset({"grp_r"})
        with pytest.raises(DecisionStoreUnavailable):
            await running.add(decision())
        with pytest.raises(DecisionStoreUnavailable):
            await running.remove(block.id)
        with pytest.raises(DecisionStoreUnavailable):
            await running.list()
        # a failed write changed nothing locally
        assert running.match(key_id=None, account_id=None, ip="203.0.113.9") == [block]
        assert running.match(key_id=None, account_id="acct_1", ip=None) == []
    finally:
        await running.close()


async def test_redis_store_keys_live_under_its_prefix(redis_url: str, redis_prefix: str) -> None:
    store = RedisDecisionStore.from_url(redis_url, prefix=redis_prefix, refresh_interval=REFRESH)
    client = aioredis.Redis.from_url(redis_url)
    try:
        await store.start()
        await store.add(decision())
        await store.set_group("g", ["a"])
        keys = {k.decode() async for k in client.scan_iter(match=redis_prefix + "*")}
        assert keys == {f"{redis_prefix}decisions", f"{redis_prefix}groups", f"{redis_prefix}decisions:version"}
    finally:
        await store.close()
        await client.aclose()


async def test_close_stops_a_follow_loop_that_swallowed_a_cancellation() -> None:
    """On Python 3.11, redis-py can swallow a cancellation that lands as a command completes
    (asyncio.wait_for, CPython gh-86296); close() must still stop the follow loop, not hang."""
    from hydraguard.decide.store import _MirroredStore

    class Swallowing(_MirroredStore):
        swallowed = 0

        async def _version_now(self) -> object:
            inside.set()
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if self.swallowed == 0:
                    self.swallowed += 1
                    return None  # the command "completed": the cancellation is lost
                raise
            return None

        async def _snapshot(self) -> tuple[object, dict[str, bytes], dict[str, str]]:
            return None, {}, {}

        async def _write(self, **_: Any) -> bool:
            return True

        async def _purge(self, decision_ids: list[str]) -> None:
            return None

    inside = asyncio.Event()
    store = Swallowing(refresh_interval=0.001)
    await store.start()
    await inside.wait()  # the follow loop is inside a "command" now
    started = time.monotonic()
    await asyncio.wait_for(store.close(), 3)
    assert time.monotonic() - started < 1.0, "close() hung on the swallowed cancellation"
    assert store.swallowed == 1
    assert store._task is None


# -- resolve() ---------------------------------------------------------------------------------------------------------
def test_resolve_nothing() -> None:
    assert resolve([]) == NO_DECISION
    assert NO_DECISION.applied is None


def test_resolve_allow_exempts_from_everything() -> None:
    decisions = [
        decision(DecisionType.BLOCK),
        decision(DecisionType.CHALLENGE),
        decision(DecisionType.THROTTLE),
        decision(DecisionType.DEGRADE, profile="p"),
        decision(DecisionType.ALLOW),
    ]
    assert resolve(decisions) == NO_DECISION
    assert resolve(decisions[::-1]) == NO_DECISION


def test_resolve_block_beats_challenge_and_the_newest_wins_a_tie() -> None:
    old_block = decision(DecisionType.BLOCK, created_at=100.0)
    new_block = decision(DecisionType.BLOCK, created_at=200.0)
    newest_challenge = decision(DecisionType.CHALLENGE, created_at=300.0)
    old_challenge = decision(DecisionType.CHALLENGE, created_at=50.0)
    assert resolve([newest_challenge, old_block]).refusal == old_block
    assert resolve([old_block, newest_challenge, new_block]).refusal == new_block
    assert resolve([new_block, old_block]).refusal == new_block
    assert resolve([old_challenge, newest_challenge]).refusal == newest_challenge
    assert resolve([newest_challenge, old_challenge]).applied == newest_challenge


def test_resolve_collects_throttles_and_picks_the_newest_degrade() -> None:
    t1 = decision(DecisionType.THROTTLE, created_at=1.0, limits=LimitSet(rpm=5))
    t2 = decision(DecisionType.THROTTLE, ScopeKind.IP, "10.0.0.1", created_at=2.0, limits=LimitSet(tpm=100))
    d_old = decision(DecisionType.DEGRADE, created_at=5.0, profile="old")
    d_new = decision(DecisionType.DEGRADE, created_at=6.0, profile="new")
    resolution = resolve([t1, d_new, t2, d_old])
    assert resolution.refusal is None
    assert resolution.throttles == (t1, t2)
    assert resolution.degrade == d_new
    assert resolution.applied == t1  # throttles are recorded before a degrade
    only_degrade = resolve([d_old, d_new])
    assert only_degrade.throttles == () and only_degrade.applied == d_new
    challenge = decision(DecisionType.CHALLENGE)
    with_refusal = resolve([t1, d_old, challenge])
    assert with_refusal.applied == challenge and with_refusal.throttles == (t1,) and with_refusal.degrade == d_old


def test_decision_validation() -> None:
    with pytest.raises(ValueError):
        decision(scope=ScopeKind.IP, value="not-an-address")
    with pytest.raises(ValueError):
        Decision(type=DecisionType.THROTTLE, scope=ScopeKind.ACCOUNT, value="a", reason="r")
    assert decision(expires_at=None).active(time.time() + 1e9)
    assert not decision(expires_at=10.0).active(10.0)
    assert decision(expires_at=10.0).active(9.99)
