"""Indicators persisted in the registry database (SQLite or PostgreSQL), in tables of their own.

A feed is applied in one transaction: every indicator merged in, or none. A version counter moves with
every change, so a gateway can rebuild its `IntelIndex` only when the set changed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from hydraguard.intel.asn import AsnTable
from hydraguard.intel.index import IntelIndex
from hydraguard.intel.indicators import MAX_VALUE_CHARS, Indicator, IndicatorKind, merge
from hydraguard.store.migrate import ensure_schema

metadata = sa.MetaData()
indicators_table = sa.Table(
    "intel_indicators",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("kind", sa.String(40), nullable=False, index=True),
    sa.Column("value", sa.String(MAX_VALUE_CHARS), nullable=False),
    sa.Column("sources", sa.Text, nullable=False),  # JSON list
    sa.Column("confidence", sa.Integer, nullable=False),
    sa.Column("first_seen", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float),
    sa.Column("description", sa.Text, nullable=False),
)
feeds_table = sa.Table(
    "intel_feeds",
    metadata,
    sa.Column("name", sa.String(500), primary_key=True),
    sa.Column("bookmark", sa.String(100)),  # TAXII: the last `added_after` point received
    sa.Column("applied_at", sa.Float, nullable=False),
)
version_table = sa.Table(
    "intel_version",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)

_CHUNK = 500  # ids per IN (...) lookup, well under every database's parameter limit


@dataclass(frozen=True)
class ApplyResult:
    added: int
    updated: int


class IntelStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        ensure_schema(engine)
        with engine.begin() as conn:
            if conn.execute(sa.select(version_table.c.version)).first() is None:
                conn.execute(version_table.insert().values(id=1, version=0))

    @classmethod
    def from_url(cls, url: str) -> IntelStore:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return cls(sa.create_engine(url))

    def close(self) -> None:
        self.engine.dispose()

    # -- writes --------------------------------------------------------------------------------------------
    def apply(
        self, indicators: Iterable[Indicator], *, feed: str | None = None, bookmark: str | None = None
    ) -> ApplyResult:
        """Merge `indicators` into the store in one transaction; with `feed`, also record that feed's
        bookmark in the same transaction (so a poll's indicators and its bookmark move together)."""
        incoming: dict[str, Indicator] = {}
        for indicator in indicators:
            known = incoming.get(indicator.id)
            incoming[indicator.id] = indicator if known is None else merge(known, indicator)
        ids = list(incoming)
        with self.engine.begin() as conn:
            stored: dict[str, Indicator] = {}
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                rows = conn.execute(sa.select(indicators_table).where(indicators_table.c.id.in_(chunk)))
                stored.update((row.id, _from_row(row)) for row in rows)
            new = [_to_row(i) for i in incoming.values() if i.id not in stored]
            changed = [
                {**_to_row(merged), "b_id": merged.id}
                for merged in (merge(stored[i], incoming[i]) for i in ids if i in stored)
                if merged != stored[merged.id]
            ]
            if new:
                conn.execute(indicators_table.insert(), new)
            if changed:
                update = indicators_table.update().where(indicators_table.c.id == sa.bindparam("b_id"))
                conn.execute(update.values({c: sa.bindparam(c) for c in _COLUMNS if c != "id"}), changed)
            if new or changed:
                _bump(conn)
            if feed is not None:
                _record_feed(conn, feed, bookmark)
        return ApplyResult(added=len(new), updated=len(changed))

    def remove(self, indicator_id: str) -> bool:
        with self.engine.begin() as conn:
            removed = conn.execute(indicators_table.delete().where(indicators_table.c.id == indicator_id)).rowcount
            if removed:
                _bump(conn)
        return bool(removed)

    def purge_expired(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            expired = indicators_table.c.expires_at.is_not(None) & (indicators_table.c.expires_at <= now)
            removed = conn.execute(indicators_table.delete().where(expired)).rowcount
            if removed:
                _bump(conn)
        return removed

    # -- reads ---------------------------------------------------------------------------------------------
    def get(self, indicator_id: str) -> Indicator | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(indicators_table).where(indicators_table.c.id == indicator_id)).first()
        return None if row is None else _from_row(row)

    def list(self, kind: IndicatorKind | None = None, *, active_at: float | None = None) -> list[Indicator]:
        return list(self.iter(kind, active_at=active_at))

    def iter(self, kind: IndicatorKind | None = None, *, active_at: float | None = None) -> Iterator[Indicator]:
        """Indicators ordered by kind and value; with `active_at`, only those not expired by then."""
        query = sa.select(indicators_table).order_by(indicators_table.c.kind, indicators_table.c.value)
        if kind is not None:
            query = query.where(indicators_table.c.kind == str(kind))
        if active_at is not None:
            live = indicators_table.c.expires_at.is_(None) | (indicators_table.c.expires_at > active_at)
            query = query.where(live)
        with self.engine.connect() as conn:
            for row in conn.execution_options(yield_per=10_000).execute(query):
                yield _from_row(row)

    def page(self, kind: IndicatorKind | None = None, *, after: str = "", limit: int = 100) -> list[Indicator]:
        """Up to `limit` indicators with ids after `after`, by id (a stable order to page through)."""
        query = sa.select(indicators_table).where(indicators_table.c.id > after).order_by(indicators_table.c.id)
        if kind is not None:
            query = query.where(indicators_table.c.kind == str(kind))
        with self.engine.connect() as conn:
            return [_from_row(row) for row in conn.execute(query.limit(limit))]

    def count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(indicators_table)).scalar_one()

    def version(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(version_table.c.version)).scalar_one()

    def bookmark(self, feed: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(feeds_table.c.bookmark).where(feeds_table.c.name == feed)).scalar()

    def applied_at(self, feed: str) -> float | None:
        """When `feed` was last applied (None: never)."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(feeds_table.c.applied_at).where(feeds_table.c.name == feed)).scalar()

    def index(self, *, asn_table: AsnTable | None = None, now: float | None = None) -> IntelIndex:
        """A matcher over the indicators live at `now` (default: the current time)."""
        return IntelIndex(self.iter(active_at=time.time() if now is None else now), asn_table=asn_table)


_COLUMNS = tuple(c.name for c in indicators_table.columns)


def _to_row(indicator: Indicator) -> dict[str, object]:
    return {
        "id": indicator.id,
        "kind": str(indicator.kind),
        "value": indicator.value,
        "sources": json.dumps(list(indicator.sources)),
        "confidence": indicator.confidence,
        "first_seen": indicator.first_seen,
        "last_seen": indicator.last_seen,
        "expires_at": indicator.expires_at,
        "description": indicator.description,
    }


def _from_row(row: sa.Row) -> Indicator:
    return Indicator(
        id=row.id,
        kind=IndicatorKind(row.kind),
        value=row.value,
        sources=tuple(json.loads(row.sources)),
        confidence=row.confidence,
        first_seen=row.first_seen,
        last_seen=row.last_seen,
        expires_at=row.expires_at,
        description=row.description,
    )


def _bump(conn: sa.Connection) -> None:
    conn.execute(version_table.update().values(version=version_table.c.version + 1))


def _record_feed(conn: sa.Connection, feed: str, bookmark: str | None) -> None:
    values = {"bookmark": bookmark, "applied_at": time.time()}
    if conn.execute(feeds_table.update().where(feeds_table.c.name == feed).values(values)).rowcount == 0:
        conn.execute(feeds_table.insert().values(name=feed, **values))
