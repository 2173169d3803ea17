"""The code's tables against the migrations: every table and column the code defines must be created by a
migration (on SQLite and PostgreSQL), and every module that defines tables must be listed in `schema`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

import hydraguard
from hydraguard.accounts import registry as registry_module
from hydraguard.store import migrate, schema


@pytest.fixture
def migrated(db_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(db_url)
    migrate.ensure_schema(engine)
    yield engine
    engine.dispose()


def test_migrations_create_every_table_column_index_and_key_of_the_code(migrated: sa.Engine) -> None:
    with migrated.connect() as conn:
        assert schema.drift(conn) == []


def test_a_table_no_migration_creates_is_caught(migrated: sa.Engine) -> None:
    widgets = sa.Table("widgets", registry_module.metadata, sa.Column("id", sa.String(40), primary_key=True))
    try:
        with migrated.connect() as conn:
            diffs = schema.drift(conn)
    finally:
        registry_module.metadata.remove(widgets)
    assert [(d[0], d[1].name) for d in diffs] == [("add_table", "widgets")]


def test_a_column_no_migration_creates_is_caught(migrated: sa.Engine) -> None:
    with migrated.begin() as conn:  # as if the migrations had left it out
        conn.exec_driver_sql("ALTER TABLE accounts DROP COLUMN email_domain")
    with migrated.connect() as conn:
        diffs = schema.drift(conn)
    assert [(d[0], d[2], d[3].name) for d in diffs] == [("add_column", "accounts", "email_domain")]


def test_every_module_that_defines_tables_is_listed() -> None:
    package = Path(hydraguard.__file__).parent
    defining = {
        ".".join(("hydraguard", *path.relative_to(package).with_suffix("").parts))
        for path in package.rglob("*.py")
        if re.search(r"\bTable\(", path.read_text()) and "migrations" not in path.parts
    }
    assert defining == set(schema.TABLE_MODULES)


def test_metadata_holds_every_listed_modules_tables() -> None:
    tables = set(schema.metadata().tables)
    assert {"orgs", "accounts", "api_keys", "decisions", "admin_tokens", "audit_log"} <= tables
    assert {"intel_indicators", "campaigns", "campaign_members", "campaign_timeline"} <= tables
