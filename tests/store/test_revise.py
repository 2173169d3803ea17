"""The developer's tool that writes the next migration, run against a copy of the migrations."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from hydraguard.accounts import registry as registry_module
from hydraguard.store import migrate, revise, schema


@pytest.fixture
def migrations_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    copy = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(migrate, "MIGRATIONS", copy)
    migrate.scripts.cache_clear()
    yield copy
    migrate.scripts.cache_clear()


@pytest.fixture
def widgets() -> Iterator[sa.Table]:
    table = sa.Table(
        "widgets",
        registry_module.metadata,
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("account_id", sa.String(40), sa.ForeignKey("accounts.id"), nullable=False, index=True),
    )
    yield table
    registry_module.metadata.remove(table)


def test_new_revision_covers_a_new_table_and_upgrades_to_it(migrations_copy: Path, widgets: sa.Table) -> None:
    before = migrate.head()
    count = len(list(migrate.scripts().walk_revisions()))
    path = revise.new_revision("add widgets")
    assert path.parent == migrations_copy / "versions"
    assert path.name == f"{count + 1:04d}_add_widgets.py"
    text = path.read_text()
    assert "op.create_table('widgets'" in text and f"down_revision = {before!r}" in text

    migrate.scripts.cache_clear()
    assert migrate.head() == f"{count + 1:04d}"
    engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    try:
        migrate.ensure_schema(engine)
        assert "widgets" in sa.inspect(engine).get_table_names()
        with engine.connect() as conn:
            assert schema.drift(conn) == []
    finally:
        engine.dispose()

    migrate.scripts.cache_clear()
    with pytest.raises(revise.NothingToRevise, match="already create every table"):
        revise.new_revision("nothing new")


def test_main_needs_one_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert revise.main([]) == 2
    assert revise.main(["  "]) == 2
    assert "usage: python -m hydraguard.store.revise" in capsys.readouterr().err
