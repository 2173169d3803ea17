"""The audit log: every admin mutation, append-only and hash-chained.

Entry n stores who, when, the action, its target, and the target's state before and after (canonical JSON,
never a secret). Its hash is an HMAC-SHA256 under the server secret over those fields, its sequence number and
the hash of entry n-1, so editing, deleting or reordering an entry breaks the chain from there on. A separate
head row keeps the count and the last hash under a MAC of its own: deleting entries from the end leaves a
chain that is consistent in itself, and only the head tells that it is shorter than it was. What this can and
cannot prove is in docs/admin.md.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from hydraguard.admin.tables import audit_head, audit_log

GENESIS = "0" * 64
_MAX_PROBLEMS = 20


class Actor(msgspec.Struct, frozen=True):
    """Who made a change: `token:<name>` with the token's role, or `cli:<os user>`."""

    name: str
    role: str | None = None


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    at: float
    actor: str
    role: str | None
    action: str
    target: str
    before: Any
    after: Any
    prev_hash: str
    hash: str


class Verification(msgspec.Struct, frozen=True):
    ok: bool
    entries: int
    head_hash: str  # record it elsewhere now and then: it pins the log up to here (docs/admin.md)
    problems: list[str]


class AuditError(Exception):
    """The chain cannot be appended to (its head is missing or altered); the message says why."""


def canonical(value: Any) -> str | None:
    """One JSON text per value (sorted keys, no spaces), so that a hash over it can be recomputed."""
    if value is None:
        return None
    return json.dumps(msgspec.to_builtins(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _mac(secret: bytes, kind: str, fields: list[Any]) -> str:
    payload = json.dumps(fields, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hmac.new(secret, f"audit-{kind}\x00{payload}".encode(), "sha256").hexdigest()


_HASHED = ("seq", "at", "actor", "role", "action", "target", "before", "after", "prev_hash")


def _entry_hash(secret: bytes, row: Mapping[str, Any]) -> str:
    return _mac(secret, "entry", [row[name] for name in _HASHED])


def _head_mac(secret: bytes, count: int, last_hash: str) -> str:
    return _mac(secret, "head", [count, last_hash])


_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def ensure_head(engine: sa.Engine, secret: bytes) -> None:
    """Start an empty chain, unless there is one (a log whose head was deleted stays headless: verify says so).

    Admin processes may start together on one database: the head is inserted unless one exists, in one statement
    that waits for and yields to a head another process is inserting, rather than checked for and then inserted."""
    with engine.begin() as conn:
        if conn.execute(sa.select(audit_log.c.seq).limit(1)).first() is not None:
            return
        insert = _INSERTS[conn.dialect.name](audit_head)
        head = {"id": 1, "count": 0, "last_hash": GENESIS, "mac": _head_mac(secret, 0, GENESIS)}
        conn.execute(insert.values(**head).on_conflict_do_nothing(index_elements=[audit_head.c.id]))


def lock(conn: sa.Connection) -> None:
    """Take the chain's write lock for this transaction (a row lock on PostgreSQL, the database's write lock on
    SQLite), so that audited changes, and their entries, happen one after another."""
    touched = conn.execute(audit_head.update().where(audit_head.c.id == 1).values(count=audit_head.c.count))
    if touched.rowcount != 1:
        raise AuditError("the audit log's head is missing; run `hydraguard audit verify`")


def append(
    conn: sa.Connection, secret: bytes, actor: Actor, *, action: str, target: str, before: Any, after: Any
) -> AuditEntry:
    """Add one entry in the caller's transaction (which has called `lock`)."""
    head = conn.execute(sa.select(audit_head).where(audit_head.c.id == 1)).one()
    if not hmac.compare_digest(head.mac, _head_mac(secret, head.count, head.last_hash)):
        # chaining on would seal the altered head with a valid MAC
        raise AuditError("the audit log's head was altered; run `hydraguard audit verify`")
    row = {
        "seq": head.count + 1,
        "at": time.time(),
        "actor": actor.name,
        "role": actor.role,
        "action": action,
        "target": target,
        "before": canonical(before),
        "after": canonical(after),
        "prev_hash": head.last_hash,
    }
    row["hash"] = _entry_hash(secret, row)
    conn.execute(audit_log.insert().values(**row))
    conn.execute(
        audit_head.update()
        .where(audit_head.c.id == 1)
        .values(count=row["seq"], last_hash=row["hash"], mac=_head_mac(secret, row["seq"], row["hash"]))
    )
    return _entry(row)


def _entry(row: Mapping[str, Any]) -> AuditEntry:
    data = dict(row)
    for side in ("before", "after"):
        data[side] = json.loads(data[side]) if data[side] is not None else None
    return AuditEntry(**data)


def page(engine: sa.Engine, *, after: int = 0, limit: int = 100) -> list[AuditEntry]:
    """Entries with a sequence number above `after`, oldest first."""
    query = sa.select(audit_log).where(audit_log.c.seq > after).order_by(audit_log.c.seq).limit(limit)
    with engine.connect() as conn:
        return [_entry(r) for r in conn.execute(query).mappings()]


def tail(engine: sa.Engine, count: int) -> list[AuditEntry]:
    """The latest `count` entries, oldest first."""
    query = sa.select(audit_log).order_by(audit_log.c.seq.desc()).limit(count)
    with engine.connect() as conn:
        return [_entry(r) for r in reversed(conn.execute(query).mappings().all())]


def verify(engine: sa.Engine, secret: bytes) -> Verification:
    """Recompute the chain and compare its end with the head."""
    problems: list[str] = []
    previous_hash, last_seq, entries = GENESIS, 0, 0
    with engine.connect() as conn:
        head = conn.execute(sa.select(audit_head).where(audit_head.c.id == 1)).first()
        rows = conn.execution_options(yield_per=1_000).execute(sa.select(audit_log).order_by(audit_log.c.seq))
        for row in rows.mappings():
            entries += 1
            seq = row["seq"]
            if seq != last_seq + 1:
                problems.append(f"entries {last_seq + 1} to {seq - 1} are missing (deleted)")
            elif row["prev_hash"] != previous_hash:
                problems.append(f"entry {seq} does not follow entry {last_seq}: entries were edited or moved")
            if not hmac.compare_digest(row["hash"], _entry_hash(secret, row)):
                problems.append(f"entry {seq} does not match its hash: it was edited")
            previous_hash, last_seq = row["hash"], seq
    if head is None:
        problems.append("the head is missing (deleted)")
    elif not hmac.compare_digest(head.mac, _head_mac(secret, head.count, head.last_hash)):
        problems.append("the head does not match its MAC: it was edited")
    elif head.count > last_seq:
        problems.append(f"the head records {head.count} entries but the log ends at {last_seq}: the tail was deleted")
    elif head.count < last_seq:
        problems.append(f"the log has entries after the head's last one ({head.count}): they were added around it")
    elif not hmac.compare_digest(head.last_hash, previous_hash):
        problems.append(f"entry {last_seq} is not the one the head records: it was replaced")
    if len(problems) > _MAX_PROBLEMS:
        problems = [*problems[:_MAX_PROBLEMS], f"… and {len(problems) - _MAX_PROBLEMS} more"]
    return Verification(ok=not problems, entries=entries, head_hash=previous_hash, problems=problems)
