"""Every table hydraguard keeps, gathered in one MetaData: what the migrations must create.

Each component defines its tables next to the code that uses them; this module lists those modules. A module that
defines a table and is not listed here is caught by tests/store (and so is a table no migration creates).
"""

from __future__ import annotations

import importlib

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

TABLE_MODULES = (
    "hydraguard.accounts.registry",
    "hydraguard.accounts.risk",
    "hydraguard.accounts.verification",
    "hydraguard.admin.signatures",
    "hydraguard.admin.tables",
    "hydraguard.decide.store",
    "hydraguard.detect.campaigns",
    "hydraguard.intel.alerts",
    "hydraguard.intel.store",
)


def metadata() -> sa.MetaData:
    """A MetaData holding a copy of every table of every MetaData in `TABLE_MODULES` (importing them all first:
    some add tables to a MetaData another module defines)."""
    modules = [importlib.import_module(name) for name in TABLE_MODULES]
    sources = {id(v): v for module in modules for v in vars(module).values() if isinstance(v, sa.MetaData)}
    combined = sa.MetaData()
    for source in sources.values():
        for table in source.tables.values():
            table.to_metadata(combined)
    return combined


def drift(conn: sa.Connection) -> list[object]:
    """How the database on `conn` differs from the code's tables (Alembic's autogenerate diffs); empty when
    the migrations cover every table, column, index and key."""
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, metadata()))
