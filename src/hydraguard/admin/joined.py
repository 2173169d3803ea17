"""Run the registry's and the SQL decision store's own operations inside a caller's transaction.

Both open a transaction per call (`engine.begin()`) and read through `engine.connect()`. To commit a change
together with its audit entry, a copy of each is given a stand-in engine that hands it the caller's
connection: the logic of the operation stays theirs, the commit becomes the caller's.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from hydraguard.accounts.registry import Registry
from hydraguard.decide.store import DecisionStore, MemoryDecisionStore, SqlDecisionStore


class _JoinedEngine:
    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    @contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        yield self._conn

    connect = begin


def registry_in(registry: Registry, conn: sa.Connection) -> Registry:
    joined = copy.copy(registry)
    joined.engine = _JoinedEngine(conn)  # type: ignore[assignment]
    joined._cache = {}  # its own: the original's cache must not be refilled from uncommitted rows
    return joined


def decisions_in(store: DecisionStore, conn: sa.Connection) -> DecisionStore | None:
    """The store joined to the transaction, or None for one that cannot be (Redis, memory)."""
    if not isinstance(store, SqlDecisionStore):
        return None
    joined = copy.copy(store)
    joined._engine = _JoinedEngine(conn)  # type: ignore[assignment]
    joined._mirror = MemoryDecisionStore()  # filled from the transaction's view by its own reads
    joined._version = None
    joined._task = None
    return joined


async def group_members(store: DecisionStore, group_id: str) -> frozenset[str]:
    if isinstance(store, MemoryDecisionStore):
        return store.members_of(group_id)
    await store.refresh(force=True)  # type: ignore[attr-defined]
    return store._mirror.members_of(group_id)  # type: ignore[attr-defined]
