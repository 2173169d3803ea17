"""Migrations on SQLite and PostgreSQL: from empty, adopting a database made before them, refusing a database that
is behind (when upgrades are off) or ahead, and several processes opening one database at once."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from hydraguard.accounts.registry import Registry
from hydraguard.decide.store import SqlDecisionStore
from hydraguard.store import migrate, schema

SECRET = b"store-test-secret"
PRE_MIGRATION_DUMP = Path(__file__).with_name("pre_migration_registry.sql")


def table_names(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def version_rows(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars())
    finally:
        engine.dispose()


def test_upgrade_from_empty_creates_every_table_at_head(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    try:
        found = migrate.ensure_schema(engine)
        assert found.current is None and not found.up_to_date
        after = migrate.state(engine)
        assert after.current == after.head == migrate.head() and after.up_to_date
        assert set(sa.inspect(engine).get_table_names()) == set(schema.metadata().tables) | {"alembic_version"}
        with engine.connect() as conn:
            assert schema.drift(conn) == []
            # the version counters' rows are seeded by the migration, not raced for by each process
            assert conn.exec_driver_sql("SELECT id, version FROM decisions_version").all() == [(1, 0)]
            assert conn.exec_driver_sql("SELECT id, version FROM intel_version").all() == [(1, 0)]
        assert migrate.ensure_schema(engine).up_to_date  # opening again changes nothing
    finally:
        engine.dispose()
    assert version_rows(db_url) == [migrate.head()]


def test_downgrade_to_base_removes_every_table(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    try:
        migrate.ensure_schema(engine)
        with engine.begin() as conn:
            command.downgrade(migrate.alembic_config(conn), "base")
        assert set(sa.inspect(engine).get_table_names()) == {"alembic_version"}
        assert migrate.state(engine).current is None
    finally:
        engine.dispose()


def test_pre_migration_sqlite_database_is_adopted_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(PRE_MIGRATION_DUMP.read_text())
    before = table_names(f"sqlite:///{path}")
    assert "orgs" in before and "alembic_version" not in before and "audit_log" not in before

    registry = Registry(f"sqlite:///{path}", SECRET)
    try:
        assert registry.get_org("org_pre").name == "Before Migrations"
        assert [k.id for k in registry.list_keys("acct_pre")] == ["key_pre"]
        with registry.engine.connect() as conn:
            assert schema.drift(conn) == []  # the tables it lacked were created
            assert conn.exec_driver_sql("SELECT version FROM decisions_version").all() == [(3,)]  # kept, not reseeded
        registry.create_account("org_pre")  # writable, foreign keys and all
    finally:
        registry.close()
    assert version_rows(f"sqlite:///{path}") == [migrate.head()]


def test_refuses_a_database_that_is_behind_when_upgrades_are_off(db_url: str) -> None:
    head = migrate.head()
    with pytest.raises(migrate.SchemaError, match=rf"revision \(none\) .* needs {head}: run `hydraguard db upgrade`"):
        Registry(db_url, SECRET, upgrade_schema=False)
    assert table_names(db_url) == set()  # refused before changing anything

    engine = sa.create_engine(db_url)
    try:
        with engine.begin() as conn:
            command.upgrade(migrate.alembic_config(conn), "0001")
    finally:
        engine.dispose()
    with pytest.raises(migrate.SchemaError, match=f"at schema revision 0001 but this version .* needs {head}"):
        Registry(db_url, SECRET, upgrade_schema=False)
    assert version_rows(db_url) == ["0001"]

    before = migrate.upgrade(db_url)
    assert before.current == "0001" and before.head == head
    assert migrate.state_of(db_url).up_to_date
    registry = Registry(db_url, SECRET, upgrade_schema=False)
    try:
        assert registry.create_org("after the explicit upgrade").name == "after the explicit upgrade"
    finally:
        registry.close()


def test_refuses_a_database_migrated_by_a_newer_version(db_url: str) -> None:
    migrate.upgrade(db_url)
    engine = sa.create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
        with pytest.raises(migrate.SchemaError, match="9999, which this version of hydraguard does not know"):
            migrate.ensure_schema(engine)
        with pytest.raises(migrate.SchemaError, match="does not know"):
            Registry(db_url, SECRET)
    finally:
        engine.dispose()
    assert version_rows(db_url) == ["9999"]  # left as it was


def test_sqlite_foreign_keys_are_enforced_again_after_migrating(tmp_path: Path) -> None:
    registry = Registry(f"sqlite:///{tmp_path}/registry.db", SECRET)
    try:
        with registry.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            with pytest.raises(sa.exc.IntegrityError):
                conn.exec_driver_sql(
                    "INSERT INTO accounts (id, org_id, tier, status, signup_at) VALUES ('a', 'no-org', 'f', 'ok', 0)"
                )
    finally:
        registry.close()


def _open_at_once(url: str, barrier: multiprocessing.synchronize.Barrier, results: multiprocessing.Queue) -> None:
    barrier.wait()
    try:
        registry = Registry(url, SECRET)
        SqlDecisionStore(registry.engine)
        registry.create_org("opened at once")
        registry.close()
        results.put("ok")
    except Exception as exc:
        results.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_a_new_database_at_once_all_succeed(db_url: str) -> None:
    spawn = multiprocessing.get_context("spawn")
    n = 4
    barrier, results = spawn.Barrier(n), spawn.Queue()
    processes = [spawn.Process(target=_open_at_once, args=(db_url, barrier, results)) for _ in range(n)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert outcomes == ["ok"] * n
    assert version_rows(db_url) == [migrate.head()]
    registry = Registry(db_url, SECRET)
    try:
        assert len(registry.list_orgs()) == n
    finally:
        registry.close()
