"""Admin services on a fresh SQLite registry, for the console's pages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hydraguard.accounts.registry import Registry
from hydraguard.admin.services import AdminServices
from hydraguard.decide.store import SqlDecisionStore
from tests.console.helpers import SECRET


@pytest.fixture
def services(tmp_path: Path) -> Iterator[AdminServices]:
    registry = Registry(f"sqlite:///{tmp_path}/registry.db", SECRET, change_check_interval=0.0)
    yield AdminServices(registry, SqlDecisionStore(registry.engine), secret=SECRET, tiers=["free", "standard"])
    registry.close()
