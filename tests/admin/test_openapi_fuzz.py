"""schemathesis against the admin API's OpenAPI spec, in process, with an admin token: no input gets a 5xx."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from hydraguard.accounts.registry import Registry
from hydraguard.admin.app import create_app
from hydraguard.admin.services import AdminServices
from hydraguard.admin.tokens import Role
from hydraguard.decide.store import SqlDecisionStore

from .conftest import CLI_ACTOR, SECRET, TIERS

EXAMPLES_PER_OPERATION = 30
OPERATIONS = sorted(
    f"{method.upper()} {path}"
    for path, item in create_app(cast(AdminServices, None)).openapi()["paths"].items()
    for method in item
)


@pytest.mark.parametrize("label", OPERATIONS)
def test_no_input_gets_a_server_error(tmp_path: Path, label: str) -> None:
    registry = Registry(f"sqlite:///{tmp_path}/registry.db", SECRET)
    services = AdminServices(registry, SqlDecisionStore(registry.engine), secret=SECRET, tiers=TIERS)
    org = services.create_org(CLI_ACTOR, "acme")
    services.issue_key(CLI_ACTOR, services.create_account(CLI_ACTOR, org.id).id)
    _, token = services.create_token(CLI_ACTOR, "fuzzer", Role.ADMIN)
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(services))
    operation = schema.find_operation_by_label(label)
    assert operation is not None

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck))
    def no_server_error(case: schemathesis.Case) -> None:
        case.call_and_validate(
            headers={"Authorization": f"Bearer {token}"}, checks=[schemathesis.checks.not_a_server_error]
        )

    try:
        no_server_error()
    finally:
        registry.close()
