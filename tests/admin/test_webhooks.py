"""The provider's signed webhooks and the verification routes: signature, tolerance and replay each refused with
nothing changed; a challenged account gets 403 verification_required from a running gateway until the provider
reports success."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from hydraguard.admin.app import build_admin_app, create_app
from hydraguard.admin.services import AdminServices
from hydraguard.admin.tokens import Role
from hydraguard.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

from .conftest import CLI_ACTOR

WEBHOOK_SECRET = "whsec-test-0123456789"


@pytest.fixture
def client(services: AdminServices, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv(services.verification.webhook_secret_env, WEBHOOK_SECRET)
    with TestClient(create_app(services)) as test_client:
        yield test_client


def signed(
    body: dict[str, Any], *, secret: str = WEBHOOK_SECRET, at: float | None = None
) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    stamp = int(time.time() if at is None else at)
    headers = {TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: sign(secret.encode(), stamp, raw)}
    return raw, {**headers, "content-type": "application/json"}


def test_signup_and_verification_webhooks_lift_the_challenge(client: TestClient, services: AdminServices) -> None:
    raw, headers = signed({"org_name": "lab", "account_type": "research", "email": "r1@uni.edu", "ip": "192.0.2.5"})
    created = client.post("/v1/webhooks/signup", content=raw, headers=headers)
    assert created.status_code == 201, created.text
    account_id = created.json()["account"]["id"]
    assert created.json()["challenge"]["type"] == "challenge" and created.json()["signup"]["verification_required"]
    for level in ("email", "phone", "identity", "organization"):
        raw, headers = signed({"account_id": account_id, "level": level, "outcome": "verified", "provider_ref": "v1"})
        reported = client.post("/v1/webhooks/verification", content=raw, headers=headers)
        assert reported.status_code == 200, reported.text
    assert reported.json()["challenges"] == [] and reported.json()["computed"]["missing_levels"] == []
    raw, headers = signed({"account_id": account_id, "outcome": "chargeback"})
    paid = client.post("/v1/webhooks/payment", content=raw, headers=headers)
    assert paid.status_code == 200 and paid.json()["payments"]["chargebacks"] == 1
    actors = {e.actor for e in services.audit_page(limit=1000) if e.action != "token.create"}
    assert actors == {"webhook:provider"}


def test_bad_signatures_stale_timestamps_and_replays_change_nothing(
    client: TestClient, services: AdminServices
) -> None:
    body = {"org_name": "lab", "email": "x@example.org"}
    raw, headers = signed(body)
    before = (services.audit_page(limit=1000), services.list_accounts())
    refusals = [
        (signed(body, secret="not-the-secret")[1], 401, "does not match"),
        ({**headers, TIMESTAMP_HEADER: str(int(headers[TIMESTAMP_HEADER]) + 1)}, 401, "does not match"),
        ({**headers, SIGNATURE_HEADER: "md5=abc"}, 401, "sha256="),
        ({k: v for k, v in headers.items() if k != SIGNATURE_HEADER}, 401, SIGNATURE_HEADER),
        ({**headers, TIMESTAMP_HEADER: "yesterday"}, 401, "Unix time"),
        (signed(body, at=time.time() - 400)[1], 401, "more than 300 s from now"),
        (signed(body, at=time.time() + 400)[1], 401, "more than 300 s from now"),  # margin: a loaded machine
    ]
    for bad_headers, status, message in refusals:
        response = client.post("/v1/webhooks/signup", content=raw, headers=bad_headers)
        assert response.status_code == status and message in response.json()["detail"], response.text
    assert (services.audit_page(limit=1000), services.list_accounts()) == before

    assert client.post("/v1/webhooks/signup", content=raw, headers=headers).status_code == 201
    after_first = (services.audit_page(limit=1000), services.list_accounts())
    replay = client.post("/v1/webhooks/signup", content=raw, headers=headers)
    assert replay.status_code == 409 and "already received" in replay.json()["detail"]
    assert (services.audit_page(limit=1000), services.list_accounts()) == after_first


def test_a_refused_webhook_does_not_use_up_its_signature(client: TestClient, services: AdminServices) -> None:
    raw, headers = signed({"account_id": "acct_missing", "level": "email", "outcome": "verified"})
    assert client.post("/v1/webhooks/verification", content=raw, headers=headers).status_code == 404
    assert client.post("/v1/webhooks/verification", content=raw, headers=headers).status_code == 404  # not 409
    raw, headers = signed({"account_id": "acct_missing", "level": "retina", "outcome": "verified"})
    invalid = client.post("/v1/webhooks/verification", content=raw, headers=headers)
    assert invalid.status_code == 422 and "level" in invalid.text


def test_webhooks_are_off_without_a_secret(services: AdminServices, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(services.verification.webhook_secret_env, raising=False)
    raw, headers = signed({"org_name": "lab"})
    with TestClient(create_app(services)) as test_client:
        response = test_client.post("/v1/webhooks/signup", content=raw, headers=headers)
    assert response.status_code == 503 and services.verification.webhook_secret_env in response.json()["detail"]


def test_operator_routes_show_the_signup_s_reasons(
    client: TestClient, services: AdminServices, role_tokens: dict[Role, str]
) -> None:
    admin, viewer = ({"Authorization": f"Bearer {role_tokens[r]}"} for r in (Role.ADMIN, Role.VIEWER))
    org_id = services.create_org(CLI_ACTOR, "acme").id
    body = {"org_id": org_id, "email": "temp@mailinator.com", "device_id": "dev-1", "payment_method": "pm_9"}
    created = client.post("/v1/signups", json=body, headers=admin)
    assert created.status_code == 201, created.text
    account_id = created.json()["account"]["id"]
    shown = client.get(f"/v1/accounts/{account_id}/verification", headers=viewer).json()
    assert shown["signup"]["signals"] == [
        {"name": "disposable_email", "weight": 40, "detail": "mailinator.com is disposable"}
    ]
    assert shown["signup"]["review"] and not shown["signup"]["challenged"] and shown["account_type"] == "individual"
    assert "dev-1" not in created.text + json.dumps(shown) and "pm_9" not in created.text
    reported = client.post(
        f"/v1/accounts/{account_id}/verification", json={"level": "email", "outcome": "verified"}, headers=admin
    )
    assert [r["level"] for r in reported.json()["levels"]] == ["email"] and reported.json()["levels"][0][
        "source"
    ] == "admin"
    recomputed = client.post(f"/v1/accounts/{account_id}/tier", headers=admin)
    assert recomputed.status_code == 200 and recomputed.json()["tier"] == "free"
    for method, path, payload, status, message in [
        ("POST", "/v1/signups", {"org_id": org_id, "org_name": "both"}, 422, "not both"),
        ("POST", "/v1/signups", {"org_name": "x", "account_type": "guild"}, 422, "account_type"),
        ("POST", "/v1/signups", {"org_name": "x", "email": "no-at-sign"}, 422, "email"),
        ("POST", "/v1/signups", {"org_name": "x", "region": "Narnia"}, 422, "region"),
        ("POST", f"/v1/accounts/{account_id}/verification", {"level": "dna", "outcome": "verified"}, 422, "level"),
        ("POST", f"/v1/accounts/{account_id}/payments", {"outcome": "refund"}, 422, "outcome"),
        ("POST", "/v1/accounts/acct_nope/payments", {"outcome": "failed"}, 404, "acct_nope"),
        ("GET", "/v1/accounts/acct_nope/verification", None, 404, "acct_nope"),
    ]:
        response = client.request(method, path, json=payload, headers=admin)
        assert response.status_code == status and message in response.text, (path, response.text)


def test_a_challenged_account_passes_the_gateway_after_the_provider_reports_success(
    start_gateway,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    running = start_gateway(
        verification={"account_types": {"startup": {"required": ["email"], "before_first_use": True}}}
    )
    monkeypatch.setenv(running.settings.verification.webhook_secret_env, WEBHOOK_SECRET)
    chat = {"model": "mock-small", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}

    def status_until(expected: int, headers: dict[str, str]) -> httpx.Response:
        deadline = time.monotonic() + 5
        while True:
            response = httpx.post(running.base_url + "/chat/completions", json=chat, headers=headers)
            if response.status_code == expected or time.monotonic() > deadline:
                return response
            time.sleep(0.05)

    with TestClient(build_admin_app(running.settings)) as admin_client:
        services: AdminServices = admin_client.app.state.services  # type: ignore[attr-defined]
        raw, headers = signed({"org_name": "startup-co", "account_type": "startup", "email": "cto@startup.io"})
        created = admin_client.post("/v1/webhooks/signup", content=raw, headers=headers)
        assert created.status_code == 201, created.text
        account_id = created.json()["account"]["id"]
        _, api_key = services.issue_key(CLI_ACTOR, account_id)
        gateway_headers = {"Authorization": f"Bearer {api_key}"}
        refused = status_until(403, gateway_headers)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "verification_required"

        raw, headers = signed({"account_id": account_id, "level": "email", "outcome": "failed"})
        assert admin_client.post("/v1/webhooks/verification", content=raw, headers=headers).status_code == 200
        time.sleep(running.settings.backend.decision_refresh_interval * 3)
        assert httpx.post(running.base_url + "/chat/completions", json=chat, headers=gateway_headers).status_code == 403

        raw, headers = signed({"account_id": account_id, "level": "email", "outcome": "verified"})
        assert admin_client.post("/v1/webhooks/verification", content=raw, headers=headers).status_code == 200
    assert status_until(200, gateway_headers).status_code == 200
