"""`hydraguard db upgrade` and `hydraguard db current` on the configured registry database."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from hydraguard.cli import app
from hydraguard.store import migrate
from hydraguard.testing.servers import free_port


def write_config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "hydraguard.toml"
    path.write_text(f'[server]\nsecret = "cli-db-test-secret"\n\n[registry]\nurl = "{url}"\n')
    return path


def run(config: Path, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, ["--config", str(config), "db", *args])


def test_current_then_upgrade_then_current(db_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, db_url)
    behind = run(config, "current")
    assert behind.exit_code == 1
    assert json.loads(behind.stdout) == {"current": None, "head": migrate.head(), "up_to_date": False}

    upgraded = run(config, "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    assert json.loads(upgraded.stdout) == {"from": None, "to": migrate.head()}

    current = run(config, "current")
    assert current.exit_code == 0
    assert json.loads(current.stdout) == {"current": migrate.head(), "head": migrate.head(), "up_to_date": True}
    again = run(config, "upgrade")
    assert json.loads(again.stdout) == {"from": migrate.head(), "to": migrate.head()}


def test_upgrade_creates_a_missing_sqlite_directory(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path}/data/registry.db")
    assert run(config, "upgrade").exit_code == 0
    assert (tmp_path / "data" / "registry.db").is_file()


def test_unreachable_database_is_a_clear_error_without_the_password(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"postgresql+psycopg://hg:hunter2@127.0.0.1:{free_port()}/registry")
    for command in ("upgrade", "current"):
        result = run(config, command)
        assert result.exit_code == 2
        assert "error: cannot use the registry database" in result.output
        assert "hunter2" not in result.output
