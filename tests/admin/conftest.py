"""Admin fixtures: services over a registry on SQLite and on PostgreSQL (`postgres_url`, tests/conftest.py),
and a token for each role."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hydraguard.accounts.registry import Registry
from hydraguard.admin.audit import Actor
from hydraguard.admin.services import AdminServices
from hydraguard.admin.tokens import Role
from hydraguard.decide.store import SqlDecisionStore

SECRET = b"admin-test-secret"
TIERS = ("free", "standard", "enterprise")
CLI_ACTOR = Actor("cli:tester")


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/registry.db"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def registry(registry_url: str) -> Iterator[Registry]:
    opened = Registry(registry_url, SECRET, change_check_interval=0.0)
    yield opened
    opened.close()


@pytest.fixture
def services(registry: Registry) -> AdminServices:
    return AdminServices(registry, SqlDecisionStore(registry.engine), secret=SECRET, tiers=TIERS)


@pytest.fixture
def role_tokens(services: AdminServices) -> dict[Role, str]:
    """A token of each role, by role."""
    return {role: services.create_token(CLI_ACTOR, f"{role}-token", role)[1] for role in Role}
