"""The admin API: every route needs a token (401) of its role (403); operations, bad input, and no secret leaks."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import cast

import httpx
import pytest
from fastapi.testclient import TestClient

from hydraguard.accounts import keys
from hydraguard.admin.app import build_admin_app, create_app
from hydraguard.admin.services import AdminServices
from hydraguard.admin.tokens import Role

from .conftest import CLI_ACTOR


@pytest.fixture
def client(services: AdminServices) -> Iterator[TestClient]:
    with TestClient(create_app(services)) as test_client:
        yield test_client


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def expected_role(method: str, path: str) -> Role:
    """The access policy, written out independently of the app: a route added without a role check fails."""
    if path.startswith("/v1/tokens"):
        return Role.ADMIN
    if method == "GET":
        return Role.VIEWER
    if path.startswith(("/v1/decisions", "/v1/groups", "/v1/intel", "/v1/campaigns")):
        return Role.ANALYST
    return Role.ADMIN


def _operations() -> list[tuple[str, str]]:
    """Every operation the app serves, from its OpenAPI spec (building it touches no services)."""
    spec = create_app(cast(AdminServices, None)).openapi()
    return sorted((method.upper(), path) for path, item in spec["paths"].items() for method in item)


OPERATIONS = _operations()


def test_the_spec_lists_every_resource() -> None:
    prefixes = {"/".join(path.split("/")[:3]) for _, path in OPERATIONS}
    assert prefixes == {
        "/v1/orgs",
        "/v1/accounts",
        "/v1/keys",
        "/v1/decisions",
        "/v1/groups",
        "/v1/audit",
        "/v1/tokens",
        "/v1/intel",
        "/v1/campaigns",
        "/v1/rules",
        "/v1/signups",
        "/v1/webhooks",
    }
    assert len(OPERATIONS) == 46  # campaigns 10, rules 1, verification and signup 5, webhooks 3


WEBHOOKS = [(m, p) for m, p in OPERATIONS if p.startswith("/v1/webhooks/")]
TOKEN_OPERATIONS = [(m, p) for m, p in OPERATIONS if (m, p) not in WEBHOOKS]


@pytest.mark.parametrize(("method", "path"), WEBHOOKS, ids=[f"{m} {p}" for m, p in WEBHOOKS])
def test_webhooks_take_a_signature_and_no_token(
    client: TestClient, services: AdminServices, role_tokens: dict[Role, str], method: str, path: str
) -> None:
    entries = len(services.audit_page())
    for headers in ({}, *(_auth(token) for token in role_tokens.values())):
        response = client.request(method, path, headers=headers, json={})
        assert response.status_code == 401, (headers, response.text)
        assert "X-Hydraguard-Signature" in response.json()["detail"]
    assert len(services.audit_page()) == entries


@pytest.mark.parametrize(("method", "path"), TOKEN_OPERATIONS, ids=[f"{m} {p}" for m, p in TOKEN_OPERATIONS])
def test_every_route_needs_a_token_of_its_role(
    client: TestClient, services: AdminServices, role_tokens: dict[Role, str], method: str, path: str
) -> None:
    url = re.sub(r"\{[^}]+\}", "x_1", path)
    entries = len(services.audit_page())
    for headers in ({}, _auth("hga_not-a-token"), {"Authorization": "Basic YWRtaW46YWRtaW4="}):
        response = client.request(method, url, headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
    needed = expected_role(method, path)
    for role in Role:
        response = client.request(method, url, headers=_auth(role_tokens[role]))
        if role.allows(needed):
            assert response.status_code not in (401, 403), (role, response.text)
        else:
            assert response.status_code == 403, (role, response.text)
            assert f"needs the {needed} role" in response.json()["detail"]
    assert len(services.audit_page()) == entries  # refused and empty requests changed nothing


def test_a_revoked_token_is_refused(client: TestClient, services: AdminServices) -> None:
    record, token = services.create_token(CLI_ACTOR, "temp", Role.ADMIN)
    assert client.get("/v1/orgs", headers=_auth(token)).status_code == 200
    services.revoke_token(CLI_ACTOR, record.id)
    assert client.get("/v1/orgs", headers=_auth(token)).status_code == 401


def test_accounts_keys_decisions_and_the_audit_log(client: TestClient, role_tokens: dict[Role, str]) -> None:
    admin, analyst, viewer = (_auth(role_tokens[r]) for r in (Role.ADMIN, Role.ANALYST, Role.VIEWER))
    org = client.post("/v1/orgs", json={"name": "acme", "tier": "standard"}, headers=admin)
    assert org.status_code == 201 and org.json()["tier"] == "standard"
    org_id = org.json()["id"]
    created = client.post(
        "/v1/accounts",
        json={"org_id": org_id, "signup_ip": "2001:DB8::1", "email_domain": "Example.org", "payment_method": "pm_4242"},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    account = created.json()
    assert account["signup_ip"] == "2001:db8::1" and account["payment_fingerprint"] and "pm_4242" not in created.text
    account_id = account["id"]
    assert client.get(f"/v1/orgs/{org_id}", headers=viewer).json()["name"] == "acme"
    assert [a["id"] for a in client.get("/v1/accounts", params={"org_id": org_id}, headers=viewer).json()] == [
        account_id
    ]

    patched = client.patch(
        f"/v1/accounts/{account_id}", json={"status": "suspended", "limits": {"rpm": 5}}, headers=admin
    )
    assert patched.json()["status"] == "suspended" and patched.json()["limit_overrides"] == {
        "rpm": 5,
        "tpm": None,
        "tpd": None,
        "concurrency": None,
    }
    patched = client.patch(f"/v1/accounts/{account_id}", json={"limits": {"tpm": 900}}, headers=admin)
    assert patched.json()["limit_overrides"]["rpm"] == 5 and patched.json()["limit_overrides"]["tpm"] == 900
    cleared = client.patch(
        f"/v1/accounts/{account_id}", json={"clear_limits": True, "tier": "enterprise"}, headers=admin
    )
    assert cleared.json()["limit_overrides"] is None and cleared.json()["tier"] == "enterprise"

    issued = client.post(f"/v1/accounts/{account_id}/keys", headers=admin)
    assert issued.status_code == 201
    plaintext, key_id = issued.json()["key"], issued.json()["id"]
    assert keys.well_formed(plaintext) and issued.json()["hint"] == keys.hint(plaintext)
    rotated = client.post(f"/v1/keys/{key_id}/rotate", json={"grace": 60}, headers=admin)
    assert rotated.status_code == 201 and rotated.json()["replaces"] == key_id
    successor = rotated.json()["key"]
    old = client.get(f"/v1/keys/{key_id}", headers=viewer).json()
    assert old["expires_at"] is not None and old["revoked_at"] is None and "key" not in old
    revoked = client.post(f"/v1/keys/{rotated.json()['id']}/revoke", headers=admin)
    assert revoked.json()["revoked_at"] is not None
    listing = client.get("/v1/keys", params={"account_id": account_id}, headers=viewer)
    assert len(listing.json()) == 2

    decision = client.post(
        "/v1/decisions",
        json={
            "type": "throttle",
            "scope": "account",
            "value": account_id,
            "reason": "burst",
            "ttl": 600,
            "limits": {"rpm": 2},
        },
        headers=analyst,
    )
    assert decision.status_code == 201, decision.text
    assert decision.json()["source"] == "token:analyst-token" and decision.json()["limits"]["rpm"] == 2
    assert [d["id"] for d in client.get("/v1/decisions", headers=viewer).json()] == [decision.json()["id"]]
    group = client.put("/v1/groups/grp_ring", json={"accounts": [account_id, "acct_b"]}, headers=analyst)
    assert group.json() == {"id": "grp_ring", "accounts": sorted([account_id, "acct_b"])}
    removed = client.delete(f"/v1/decisions/{decision.json()['id']}", headers=analyst)
    assert removed.json()["id"] == decision.json()["id"]
    assert client.get("/v1/decisions", headers=viewer).json() == []

    first = client.get("/v1/audit", params={"limit": 5}, headers=viewer).json()
    rest = client.get("/v1/audit", params={"after": first["next_after"], "limit": 100}, headers=viewer).json()
    entries = first["entries"] + rest["entries"]
    assert rest["next_after"] is None
    actions = [e["action"] for e in entries]
    assert actions[:3] == ["token.create"] * 3  # the fixture's tokens, made from the CLI
    assert actions[3:] == [
        "org.create",
        "account.create",
        "account.update",
        "account.update",
        "account.update",
        "key.issue",
        "key.rotate",
        "key.revoke",
        "decision.add",
        "group.set",
        "decision.remove",
    ]
    assert {e["actor"] for e in entries[3:9]} == {"token:admin-token"} and entries[3]["role"] == "admin"
    verified = client.get("/v1/audit/verify", headers=viewer).json()
    assert verified["ok"] and verified["entries"] == len(entries) and verified["head_hash"] == entries[-1]["hash"]
    everything = str(entries)
    for secret in [plaintext, successor, "pm_4242", *(t[4:] for t in (role_tokens.values()))]:
        assert secret not in everything and secret not in listing.text


def test_tokens_are_shown_once(client: TestClient, role_tokens: dict[Role, str]) -> None:
    admin = _auth(role_tokens[Role.ADMIN])
    created = client.post("/v1/tokens", json={"name": "ci-bot", "role": "analyst"}, headers=admin)
    assert created.status_code == 201
    token = created.json()["token"]
    assert token.startswith("hga_") and created.json()["role"] == "analyst"
    listing = client.get("/v1/tokens", headers=admin)
    assert token not in listing.text and [t["name"] for t in listing.json()][-1] == "ci-bot"
    assert (
        client.post(
            "/v1/decisions",
            json={"type": "block", "scope": "ip", "value": "192.0.2.1", "reason": "x"},
            headers=_auth(token),
        ).status_code
        == 201
    )
    assert client.post(f"/v1/tokens/{created.json()['id']}/revoke", headers=admin).json()["revoked_at"] is not None
    assert client.get("/v1/orgs", headers=_auth(token)).status_code == 401


BAD_REQUESTS = [
    ("POST", "/v1/orgs", {"name": "x", "tier": "gold"}, 422, "unknown tier 'gold'"),
    ("POST", "/v1/orgs", {"name": ""}, 422, "name"),
    ("POST", "/v1/orgs", {"name": "a\x00b"}, 422, "name"),
    ("POST", "/v1/orgs", {"name": "x", "owner": "me"}, 422, "owner"),
    ("POST", "/v1/accounts", {"org_id": "org_nope"}, 404, "no org 'org_nope'"),
    ("POST", "/v1/accounts", {"org_id": "@ORG", "signup_ip": "999.0.0.1"}, 422, "signup_ip"),
    ("PATCH", "/v1/accounts/@ACCOUNT", {}, 422, "nothing to change"),
    ("PATCH", "/v1/accounts/@ACCOUNT", {"status": "deleted"}, 422, "status"),
    ("PATCH", "/v1/accounts/@ACCOUNT", {"limits": {"rpm": 0}}, 422, "rpm"),
    ("PATCH", "/v1/accounts/@ACCOUNT", {"limits": {"rmp": 5}}, 422, "rmp"),
    ("PATCH", "/v1/accounts/acct_nope", {"tier": "free"}, 404, "no account 'acct_nope'"),
    ("GET", "/v1/accounts/acct_nope", None, 404, "acct_nope"),
    ("GET", "/v1/orgs/org_nope", None, 404, "org_nope"),
    ("GET", "/v1/keys/key_nope", None, 404, "key_nope"),
    ("GET", "/v1/keys/a%20b", None, 422, "key_id"),
    ("POST", "/v1/accounts/acct_nope/keys", None, 404, "acct_nope"),
    ("POST", "/v1/keys/@KEY/rotate", {"grace": -1}, 422, "grace"),
    ("POST", "/v1/keys/@KEY/rotate", {"grace": "NaN"}, 422, "grace"),
    ("POST", "/v1/keys/@KEY/revoke", None, 409, "already revoked"),
    ("POST", "/v1/keys/@KEY/rotate", {}, 409, "cannot be rotated"),
    ("POST", "/v1/decisions", {"type": "nuke", "scope": "ip", "value": "1.2.3.4", "reason": "x"}, 422, "type"),
    (
        "POST",
        "/v1/decisions",
        {"type": "block", "scope": "ip", "value": "10.0.0.300", "reason": "x"},
        422,
        "10.0.0.300",
    ),
    ("POST", "/v1/decisions", {"type": "throttle", "scope": "key", "value": "k", "reason": "x"}, 422, "reduced limits"),
    ("POST", "/v1/decisions", {"type": "block", "scope": "key", "value": "k", "reason": "x", "ttl": 0}, 422, "ttl"),
    ("DELETE", "/v1/decisions/dec_nope", None, 404, "no decision 'dec_nope'"),
    ("PUT", "/v1/groups/grp_x", {"accounts": ["a,b"]}, 422, "accounts"),
    ("PUT", "/v1/groups/grp_x", {}, 422, "accounts"),
    ("POST", "/v1/tokens", {"name": "admin-token", "role": "admin"}, 409, "exists"),
    ("POST", "/v1/tokens", {"name": "x", "role": "root"}, 422, "role"),
    ("POST", "/v1/tokens/tok_nope/revoke", None, 404, "tok_nope"),
    ("GET", "/v1/audit?limit=0", None, 422, "limit"),
    ("GET", "/v1/audit?after=-1", None, 422, "after"),
]


def test_bad_input_is_a_clear_4xx_and_changes_nothing(
    client: TestClient, services: AdminServices, role_tokens: dict[Role, str]
) -> None:
    org = services.create_org(CLI_ACTOR, "acme")
    account = services.create_account(CLI_ACTOR, org.id)
    key, _ = services.issue_key(CLI_ACTOR, account.id)
    services.revoke_key(CLI_ACTOR, key.id)
    ids = {"@ORG": org.id, "@ACCOUNT": account.id, "@KEY": key.id}
    admin = _auth(role_tokens[Role.ADMIN])
    before = services.audit_page(limit=1000)
    state = (services.list_orgs(), services.list_accounts(), services.list_keys(), services.list_tokens())
    for method, path, body, status, message in BAD_REQUESTS:
        for placeholder, value in ids.items():
            path = path.replace(placeholder, value)
            if body and body.get("org_id") == placeholder:
                body = {**body, "org_id": value}
        response = client.request(method, path, json=body, headers=admin)
        assert response.status_code == status, (method, path, body, response.text)
        assert message in response.text, (method, path, response.text)
    assert services.audit_page(limit=1000) == before
    assert (services.list_orgs(), services.list_accounts(), services.list_keys(), services.list_tokens()) == state


def test_openapi_and_docs_are_served(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["info"]["title"] == "hydraguard admin API"
    assert "/v1/accounts/{account_id}" in spec["paths"]
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert client.get("/docs").status_code == 200


def test_decisions_from_the_admin_api_reach_a_running_gateway(start_gateway) -> None:  # type: ignore[no-untyped-def]
    running = start_gateway()
    account, api_key = running.account()
    body = {"model": "mock-small", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}
    gateway_headers = _auth(api_key)
    assert httpx.post(running.base_url + "/chat/completions", json=body, headers=gateway_headers).status_code == 200

    with TestClient(build_admin_app(running.settings)) as admin_client:
        services: AdminServices = admin_client.app.state.services  # type: ignore[attr-defined]
        _, token = services.create_token(CLI_ACTOR, "ops", Role.ANALYST)
        added = admin_client.post(
            "/v1/decisions",
            json={"type": "block", "scope": "account", "value": account.id, "reason": "extraction campaign"},
            headers=_auth(token),
        )
        assert added.status_code == 201
    deadline = time.monotonic() + 5
    while True:
        status = httpx.post(running.base_url + "/chat/completions", json=body, headers=gateway_headers).status_code
        if status == 403 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status == 403
