"""Threat intel in the admin API: indicators and feeds (audited, bad input changes nothing), and the TAXII server
of campaigns at /taxii2/, pulled with taxii2-client behind an admin token."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pytest
import requests
from fastapi.testclient import TestClient
from taxii2client.v21 import Collection, Server

from hydraguard.admin.app import create_app
from hydraguard.admin.services import AdminServices
from hydraguard.admin.tokens import Role
from hydraguard.decide.model import ScopeKind
from hydraguard.detect.campaigns import CampaignStatus
from hydraguard.detect.engine import Detection
from hydraguard.detect.rules import Action, Hit, Severity
from hydraguard.intel.campaign_collection import public_name
from hydraguard.intel.feeds import parse_stix_objects
from hydraguard.intel.indicators import IndicatorKind
from hydraguard.testing.servers import ThreadedServer

from .conftest import CLI_ACTOR

PAYMENT = "0f" * 16


@pytest.fixture
def client(services: AdminServices) -> Iterator[TestClient]:
    with TestClient(create_app(services)) as test_client:
        yield test_client


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _audit_actions(services: AdminServices) -> list[str]:
    return [e.action for e in services.audit_page(limit=1_000)]


def test_indicators_are_added_listed_and_removed_with_audit_entries(
    client: TestClient, services: AdminServices, role_tokens: dict[Role, str]
) -> None:
    analyst, viewer = _auth(role_tokens[Role.ANALYST]), _auth(role_tokens[Role.VIEWER])
    version = client.get("/v1/intel", headers=viewer).json()["version"]
    added = client.post(
        "/v1/intel/indicators",
        json={"kind": "ip", "value": "198.51.100.0/24", "confidence": 80, "ttl": 3600, "description": "scrapers"},
        headers=analyst,
    )
    assert added.status_code == 201, added.text
    indicator = added.json()
    assert indicator["sources"] == ["token:analyst-token"] and indicator["confidence"] == 80
    assert indicator["expires_at"] is not None
    assert client.get("/v1/intel", headers=viewer).json() == {"indicators": 1, "version": version + 1}
    for value in ("203.0.113.1", "203.0.113.2", "203.0.113.3"):
        client.post("/v1/intel/indicators", json={"kind": "ip", "value": value}, headers=analyst)

    first = client.get("/v1/intel/indicators", params={"limit": 3}, headers=viewer).json()
    rest = client.get("/v1/intel/indicators", params={"limit": 3, "after": first["next_after"]}, headers=viewer).json()
    ids = [i["id"] for i in first["indicators"] + rest["indicators"]]
    assert len(ids) == 4 == len(set(ids)) and ids == sorted(ids) and rest["next_after"] is None
    assert client.get(f"/v1/intel/indicators/{indicator['id']}", headers=viewer).json() == indicator
    assert client.get("/v1/intel/indicators", params={"kind": "asn"}, headers=viewer).json()["indicators"] == []

    removed = client.delete(f"/v1/intel/indicators/{indicator['id']}", headers=analyst)
    assert removed.status_code == 200 and removed.json()["id"] == indicator["id"]
    assert client.get(f"/v1/intel/indicators/{indicator['id']}", headers=viewer).status_code == 404
    assert client.delete(f"/v1/intel/indicators/{indicator['id']}", headers=analyst).status_code == 404
    entries = [e for e in services.audit_page(limit=1_000) if e.action.startswith("intel.")]
    assert [e.action for e in entries] == ["intel.add"] * 4 + ["intel.remove"]
    assert entries[0].target == indicator["id"] and entries[0].after["value"] == "198.51.100.0/24"
    assert entries[-1].before["id"] == indicator["id"] and entries[-1].after is None
    assert services.verify_audit().ok


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "ip", "value": "10.0.0.0/4"},  # wider than /8: a likely feed mistake
        {"kind": "key_fingerprint", "value": "sk-live-raw-key"},  # a raw key, not its hash
        {"kind": "user_agent", "value": "(a)"},  # a capturing group
        {"kind": "nonsense", "value": "x"},
        {"kind": "ip", "value": "192.0.2.1", "confidence": 101},
        {"kind": "ip", "value": "192.0.2.1", "description": "bad\x00"},
    ],
)
def test_bad_indicators_are_refused_and_change_nothing(
    client: TestClient, services: AdminServices, role_tokens: dict[Role, str], body: dict[str, object]
) -> None:
    entries = len(services.audit_page())
    response = client.post("/v1/intel/indicators", json=body, headers=_auth(role_tokens[Role.ANALYST]))
    assert response.status_code == 422, response.text
    assert services.intel_summary()["indicators"] == 0 and len(services.audit_page()) == entries


def test_feeds_are_applied_all_or_nothing(
    client: TestClient, services: AdminServices, role_tokens: dict[Role, str]
) -> None:
    analyst = _auth(role_tokens[Role.ANALYST])
    listed = client.post(
        "/v1/intel/feeds",
        json={"format": "list", "kind": "email_domain", "source": "lab-a", "content": "# x\nevil.example\nx.test\n"},
        headers=analyst,
    )
    assert listed.status_code == 201, listed.text
    assert listed.json() == {"feed": "lab-a", "parsed": 2, "added": 2, "updated": 0, "skipped": 0}
    csv_feed = "kind,value,confidence\nip,192.0.2.7,90\nemail_domain,evil.example,70\n"
    merged = client.post(
        "/v1/intel/feeds", json={"format": "csv", "source": "lab-b", "content": csv_feed}, headers=analyst
    )
    assert merged.json() == {"feed": "lab-b", "parsed": 2, "added": 1, "updated": 1, "skipped": 0}

    entries = len(services.audit_page())
    bad = client.post(
        "/v1/intel/feeds",
        json={"format": "list", "kind": "ip", "source": "lab-c", "content": "192.0.2.9\nnot-an-ip\n"},
        headers=analyst,
    )
    assert bad.status_code == 422 and "nothing applied" in bad.json()["detail"] and "line 2" in bad.json()["detail"]
    no_kind = client.post(
        "/v1/intel/feeds", json={"format": "list", "source": "lab-c", "content": "192.0.2.9\n"}, headers=analyst
    )
    assert no_kind.status_code == 422 and "kind" in no_kind.json()["detail"]
    invalid_stix = client.post(
        "/v1/intel/feeds", json={"format": "stix", "source": "lab-d", "content": '{"type": 1'}, headers=analyst
    )
    assert invalid_stix.status_code == 422
    assert services.intel_summary()["indicators"] == 3 and len(services.audit_page()) == entries
    assert _audit_actions(services).count("intel.import") == 2


def test_feeds_over_the_configured_size_are_refused(
    client: TestClient, services: AdminServices, role_tokens: dict[Role, str]
) -> None:
    services.intel_settings = services.intel_settings.model_copy(update={"max_feed_indicators": 2})
    content = "192.0.2.1\n192.0.2.2\n192.0.2.3\n"
    response = client.post(
        "/v1/intel/feeds",
        json={"format": "list", "kind": "ip", "source": "big", "content": content},
        headers=_auth(role_tokens[Role.ANALYST]),
    )
    assert response.status_code == 422 and "more than 2" in response.json()["detail"]
    assert services.intel_summary()["indicators"] == 0


# -- TAXII -------------------------------------------------------------------------------------------------------
class Bearer(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


def _campaign(services: AdminServices, subject: str, accounts: tuple[str, ...], at: float, severity: Severity) -> None:
    hit = Hit("hydra-cluster", 1, severity, Action.BLOCK, ScopeKind.GROUP, 86400, False, ("fired",))
    indicators = (
        ("payment", PAYMENT),
        ("signup_subnet", "198.51.100.0/24"),
        ("email_domain", "evil.example"),
        ("template", "3:0a1b2c3d"),  # one LSH band: not exported
    )
    features = {"cluster.accounts": float(len(accounts)), "cluster.hour_entropy": math.nan}
    detection = Detection(at, "cluster", subject, accounts, (hit,), features, ("shared payment",), indicators)
    services.campaigns.record([detection])


@pytest.fixture
def taxii_root(services: AdminServices) -> Iterator[str]:
    with ThreadedServer(create_app(services)) as server:
        yield server.url + "/taxii2/"


def test_taxii_serves_confirmed_campaigns_to_viewers(
    taxii_root: str, services: AdminServices, role_tokens: dict[Role, str]
) -> None:
    _campaign(services, "acct_lone", ("acct_lone",), 1_700_000_000.0, Severity.CRITICAL)
    _campaign(services, "cl_ring", ("acct_a", "acct_b", "acct_c"), 1_700_000_100.0, Severity.MEDIUM)
    services.campaigns.set_status("acct_lone", CampaignStatus.CONFIRMED, "analyst")
    auth = Bearer(role_tokens[Role.VIEWER])

    server = Server(taxii_root, auth=auth)
    (api_root,) = server.api_roots
    assert api_root.url == taxii_root + "hydraguard/"
    (collection_info,) = api_root.collections
    assert collection_info.id == "campaigns" and collection_info.can_read and not collection_info.can_write
    collection = Collection(api_root.url + "collections/campaigns/", auth=auth)
    envelope = collection.get_objects()
    objects = envelope["objects"]
    (campaign,) = [o for o in objects if o["type"] == "campaign"]  # only the confirmed one
    assert campaign["name"] == public_name("acct_lone") and campaign["x_hydraguard_member_count"] == 1
    text = json.dumps(objects)
    assert "acct_lone" not in text and "acct_a" not in text  # no account ids leave
    kinds = {i.kind for i in parse_stix_objects(objects, source="pull").indicators}
    assert kinds == {IndicatorKind.PAYMENT_FINGERPRINT, IndicatorKind.IP, IndicatorKind.EMAIL_DOMAIN}

    # added_after: nothing new until a campaign changes, then its new versions
    headers = {"Accept": "application/taxii+json;version=2.1"}
    last = requests.get(collection.url + "objects/", headers=headers, auth=auth, timeout=5).headers[
        "X-TAXII-Date-Added-Last"
    ]
    assert collection.get_objects(added_after=last).get("objects", []) == []
    services.campaigns.set_status("cl_ring", CampaignStatus.CONFIRMED, "analyst")
    newer = collection.get_objects(added_after=last)["objects"]
    assert [o["name"] for o in newer if o["type"] == "campaign"] == [public_name("cl_ring")]


def test_taxii_can_serve_open_campaigns_above_a_score(taxii_root: str, services: AdminServices, role_tokens) -> None:
    _campaign(services, "cl_high", ("a1", "a2"), 1_700_000_000.0, Severity.CRITICAL)
    _campaign(services, "cl_low", ("b1", "b2"), 1_700_000_000.0, Severity.LOW)
    opened = {"export_open": True, "export_open_min_score": 0.5}
    services.intel_settings = services.intel_settings.model_copy(update=opened)
    auth = Bearer(role_tokens[Role.VIEWER])
    objects = Collection(taxii_root + "hydraguard/collections/campaigns/", auth=auth).get_objects()["objects"]
    assert [o["name"] for o in objects if o["type"] == "campaign"] == [public_name("cl_high")]


def test_taxii_needs_an_admin_token(taxii_root: str, services: AdminServices) -> None:
    for auth in (None, Bearer("hga_not-a-token")):
        response = requests.get(taxii_root, auth=auth, timeout=5)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert response.headers["content-type"].startswith("application/taxii+json")
    with pytest.raises(requests.HTTPError, match="401"):
        Server(taxii_root, user="admin", password="admin").refresh()
    record, token = services.create_token(CLI_ACTOR, "gone", Role.VIEWER)
    services.revoke_token(CLI_ACTOR, record.id)
    assert requests.get(taxii_root, auth=Bearer(token), timeout=5).status_code == 401
