"""Write a new migration for the tables the code defines and the migrations do not create yet (a developer's tool):

    .venv/bin/python -m hydraguard.store.revise "add verification tables"

Alembic compares the code's tables (`schema.metadata()`) with a scratch SQLite database upgraded to the newest
revision and writes the difference as the next numbered revision under migrations/versions/, in batch mode (SQLite
cannot ALTER most things). Read and edit what it wrote: autogenerate does not see renames, and data must be moved
by hand.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import sqlalchemy as sa
from alembic import command

from hydraguard.store import migrate, schema


class NothingToRevise(Exception):
    pass


def new_revision(message: str) -> Path:
    """Write the next revision for `message`; returns its path."""
    with tempfile.TemporaryDirectory() as scratch:
        engine = sa.create_engine(f"sqlite:///{scratch}/head.db")
        try:
            migrate.ensure_schema(engine)
            with engine.begin() as conn:
                if not schema.drift(conn):
                    raise NothingToRevise("the migrations already create every table the code defines")
                number = len(list(migrate.scripts().walk_revisions())) + 1
                config = migrate.alembic_config(conn, target_metadata=schema.metadata())
                script = command.revision(config, message=message, autogenerate=True, rev_id=f"{number:04d}")
        finally:
            engine.dispose()
    assert script is not None and not isinstance(script, list)
    return Path(script.path)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].strip():
        print('usage: python -m hydraguard.store.revise "what the revision does"', file=sys.stderr)
        return 2
    try:
        path = new_revision(argv[0])
    except NothingToRevise as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
