"""The hash-chained audit log: verify finds an edited, deleted, reordered or truncated entry, and a forged head."""

from __future__ import annotations

import itertools
import multiprocessing
from multiprocessing.synchronize import Barrier

import pytest
import sqlalchemy as sa

from hydraguard.accounts.registry import Registry
from hydraguard.admin import audit
from hydraguard.admin.audit import AuditError
from hydraguard.admin.services import AdminServices
from hydraguard.admin.tables import audit_head, audit_log
from hydraguard.decide.store import SqlDecisionStore
from hydraguard.store.migrate import ensure_schema

from .conftest import CLI_ACTOR, SECRET


@pytest.fixture
def logged(services: AdminServices) -> AdminServices:
    """Five audited changes."""
    org = services.create_org(CLI_ACTOR, "acme")
    account = services.create_account(CLI_ACTOR, org.id)
    services.update_account(CLI_ACTOR, account.id, tier="standard")
    key, _ = services.issue_key(CLI_ACTOR, account.id)
    services.revoke_key(CLI_ACTOR, key.id)
    return services


def _execute(services: AdminServices, statement: sa.Executable) -> None:
    with services.registry.engine.begin() as conn:
        conn.execute(statement)


def test_an_untouched_chain_verifies(logged: AdminServices) -> None:
    result = logged.verify_audit()
    assert result.ok and result.problems == []
    assert result.entries == 5
    entries = logged.audit_page()
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert result.head_hash == entries[-1].hash


def test_an_edited_entry_is_found(logged: AdminServices) -> None:
    _execute(logged, audit_log.update().where(audit_log.c.seq == 3).values(actor="cli:someone-else"))
    result = logged.verify_audit()
    assert not result.ok
    assert result.problems == ["entry 3 does not match its hash: it was edited"]


def test_an_entry_edited_with_a_recomputed_plain_hash_is_found(logged: AdminServices) -> None:
    """Without the server secret, an editor cannot recompute the hashes after the edited entry."""
    entry = logged.audit_page(after=1, limit=1)[0]
    forged = audit._mac(b"not-the-secret", "entry", [*(getattr(entry, f) for f in audit._HASHED)])
    _execute(logged, audit_log.update().where(audit_log.c.seq == 2).values(hash=forged))
    problems = logged.verify_audit().problems
    assert "entry 2 does not match its hash: it was edited" in problems
    assert "entry 3 does not follow entry 2: entries were edited or moved" in problems


def test_a_deleted_entry_is_found(logged: AdminServices) -> None:
    _execute(logged, audit_log.delete().where(audit_log.c.seq == 2))
    result = logged.verify_audit()
    assert not result.ok and result.entries == 4
    assert result.problems == ["entries 2 to 2 are missing (deleted)"]


def test_reordered_entries_are_found(logged: AdminServices) -> None:
    _execute(logged, audit_log.update().where(audit_log.c.seq == 2).values(seq=-2))
    _execute(logged, audit_log.update().where(audit_log.c.seq == 3).values(seq=2))
    _execute(logged, audit_log.update().where(audit_log.c.seq == -2).values(seq=3))
    problems = logged.verify_audit().problems
    assert "entry 2 does not follow entry 1: entries were edited or moved" in problems
    assert "entry 2 does not match its hash: it was edited" in problems
    assert "entry 3 does not match its hash: it was edited" in problems


def test_a_truncated_tail_is_found(logged: AdminServices) -> None:
    _execute(logged, audit_log.delete().where(audit_log.c.seq >= 4))
    result = logged.verify_audit()
    assert result.problems == ["the head records 5 entries but the log ends at 3: the tail was deleted"]


def test_a_truncated_tail_with_a_rewritten_head_is_found(logged: AdminServices) -> None:
    third = logged.audit_page(after=2, limit=1)[0]
    _execute(logged, audit_log.delete().where(audit_log.c.seq >= 4))
    _execute(logged, audit_head.update().values(count=3, last_hash=third.hash))
    assert logged.verify_audit().problems == ["the head does not match its MAC: it was edited"]


def test_a_replaced_last_entry_is_found(logged: AdminServices) -> None:
    _execute(logged, audit_log.update().where(audit_log.c.seq == 5).values(hash="f" * 64))
    problems = logged.verify_audit().problems
    assert problems == [
        "entry 5 does not match its hash: it was edited",
        "entry 5 is not the one the head records: it was replaced",
    ]


def test_a_deleted_log_and_head_are_found(logged: AdminServices) -> None:
    _execute(logged, audit_head.delete())
    assert logged.verify_audit().problems == ["the head is missing (deleted)"]
    # a headless log is not given a fresh head, and takes no more changes
    AdminServices(logged.registry, logged.decisions, secret=SECRET, tiers=["free"])
    with pytest.raises(AuditError, match="head is missing"):
        logged.create_org(CLI_ACTOR, "after")
    assert [o.name for o in logged.list_orgs()] == ["acme"]


def test_an_altered_head_stops_changes_rather_than_sealing_them(logged: AdminServices) -> None:
    _execute(logged, audit_log.delete().where(audit_log.c.seq == 5))
    fourth = logged.audit_page(after=3, limit=1)[0]
    _execute(logged, audit_head.update().values(count=4, last_hash=fourth.hash))
    with pytest.raises(AuditError, match="head was altered"):
        logged.create_org(CLI_ACTOR, "launder")
    assert [o.name for o in logged.list_orgs()] == ["acme"]
    assert not logged.verify_audit().ok


def test_another_secret_does_not_verify(logged: AdminServices) -> None:
    result = audit.verify(logged.registry.engine, b"another-secret")
    assert not result.ok
    assert "entry 1 does not match its hash: it was edited" in result.problems


def test_tail_and_paging(logged: AdminServices) -> None:
    assert [e.seq for e in logged.audit_tail(2)] == [4, 5]
    assert [e.seq for e in logged.audit_page(after=1, limit=2)] == [2, 3]
    assert logged.audit_page(after=5) == []


def _open_and_change(registry_url: str, start: Barrier, name: str) -> None:
    """One admin process: open the services the moment every other one does, then make one audited change."""
    registry = Registry(registry_url, SECRET, change_check_interval=0.0)
    try:
        start.wait(timeout=60)
        services = AdminServices(registry, SqlDecisionStore(registry.engine), secret=SECRET, tiers=["free"])
        services.create_org(CLI_ACTOR, name)
    finally:
        registry.close()


def test_admin_processes_starting_together_share_one_chain(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    ensure_schema(engine)  # a fresh database: the schema, no audit head yet
    engine.dispose()
    processes = 8
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(processes)
    workers = [
        context.Process(target=_open_and_change, args=(postgres_url, start, f"org-{n}")) for n in range(processes)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0] * processes
    registry = Registry(postgres_url, SECRET, change_check_interval=0.0)
    try:
        result = audit.verify(registry.engine, SECRET)
        assert result.ok, result.problems
        assert result.entries == processes
        assert sorted(o.name for o in registry.list_orgs()) == sorted(f"org-{n}" for n in range(processes))
    finally:
        registry.close()
