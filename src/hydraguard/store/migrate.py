"""Schema migrations: Alembic, configured from inside the package, run when a database is opened.

`ensure_schema(engine)` brings a database to the newest revision, or with `upgrade=False` refuses one that is
behind. Every component that keeps tables calls it before using them: the first to open a database migrates it,
the others find it current after one read. Concurrent opens (several gateway processes starting at once) are
serialized by the database: a PostgreSQL advisory lock, SQLite's write lock; whoever waited finds the work done.

A database made by `create_all` before migrations existed has some of the initial revision's tables and no
version table: the initial revision creates only the tables missing (`if_not_exists`), which adopts it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

MIGRATIONS = Path(__file__).with_name("migrations")
# any lock id of our own; advisory locks are per database, so deployments sharing a server do not wait on each other
_PG_LOCK_ID = 0x6879647261677264

log = logging.getLogger(__name__)


class SchemaError(Exception):
    """The database's schema is not the one this version of hydraguard needs; the message says what to do."""


@dataclass(frozen=True)
class SchemaState:
    current: str | None  # None: no migration has run on this database
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def alembic_config(connection: sa.Connection, target_metadata: sa.MetaData | None = None) -> Config:
    """Alembic's configuration without an alembic.ini: the package's migrations, run on `connection`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    config.set_main_option("truncate_slug_length", "60")
    config.attributes["connection"] = connection
    config.attributes["target_metadata"] = target_metadata
    return config


@cache
def scripts() -> ScriptDirectory:
    return ScriptDirectory(str(MIGRATIONS))


def head() -> str:
    """The newest revision: the schema this version of hydraguard needs."""
    newest = scripts().get_current_head()
    assert newest is not None, f"no migrations under {MIGRATIONS}"
    return newest


def state(engine: sa.Engine) -> SchemaState:
    with engine.connect() as conn:
        current = _current(conn)
    _check_known(current)
    return SchemaState(current, head())


def ensure_schema(engine: sa.Engine, *, upgrade: bool = True) -> SchemaState:
    """Bring the database to the newest revision (or, with `upgrade=False`, raise `SchemaError` if it is behind);
    returns the state it was found in."""
    found = state(engine)
    if found.up_to_date:
        return found
    if not upgrade:
        raise SchemaError(
            f"the registry database is at schema revision {found.current or '(none)'} but this version of "
            f"hydraguard needs {found.head}: run `hydraguard db upgrade` (automatic upgrades are off)"
        )
    with _migration_lock(engine) as conn:
        current = _current(conn)  # another process may have migrated it while this one waited for the lock
        if current != found.head:
            existing = sa.inspect(conn).get_table_names() if current is None else []
            if existing:
                log.info("adopting tables created before migrations (%s) at the initial revision", ", ".join(existing))
            command.upgrade(alembic_config(conn), "head")
            log.info("migrated the database schema from %s to %s", current or "(none)", found.head)
    return found


def upgrade(url: str) -> SchemaState:
    """`hydraguard db upgrade`: migrate the database at `url` to the newest revision; returns the state before."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)
    try:
        return ensure_schema(engine)
    finally:
        engine.dispose()


def state_of(url: str) -> SchemaState:
    """`hydraguard db current`: the database's revision and the one this version needs."""
    engine = sa.create_engine(url)
    try:
        return state(engine)
    finally:
        engine.dispose()


def _current(conn: sa.Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _check_known(revision: str | None) -> None:
    if revision is None:
        return
    try:
        known = scripts().get_revision(revision)
    except CommandError:
        known = None
    if known is None:
        raise SchemaError(
            f"the registry database is at schema revision {revision}, which this version of hydraguard does not "
            "know: a newer version has migrated it; run that version"
        )


@contextmanager
def _migration_lock(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection in a transaction that only one process at a time can hold on this database."""
    with engine.connect() as conn:
        if conn.dialect.name != "sqlite":
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_ID)))
                yield conn
            return
        # Batch migrations copy a table and drop the original, which enforced foreign keys would refuse or
        # cascade; the pragma cannot change inside a transaction, so it is switched around it.
        foreign_keys = conn.exec_driver_sql("PRAGMA foreign_keys").scalar()
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        conn.commit()
        try:
            with conn.begin():
                # the driver would start a deferred transaction only at the first write; take the write lock now
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                yield conn
        finally:
            conn.exec_driver_sql(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
            conn.commit()
