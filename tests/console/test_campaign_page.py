"""The console's campaign page over HTTP: its most repeated templates, from the event log or from detection."""

from __future__ import annotations

import math
from pathlib import Path

from fastapi.testclient import TestClient

from hydraguard.admin.app import create_app
from hydraguard.admin.services import AdminServices
from hydraguard.admin.tokens import Role
from hydraguard.decide.model import ScopeKind
from hydraguard.detect.campaigns import CampaignStore
from hydraguard.detect.engine import Detection
from hydraguard.detect.rules import Action, Hit, Severity
from hydraguard.detect.samples import TemplateSample
from hydraguard.events.log import EventLog
from hydraguard.events.schema import RequestEvent
from tests.console.helpers import ACTOR, START


def _campaign_page(services: AdminServices, events_dir: Path, accounts: tuple[str, ...]) -> str:
    hit = Hit("hydra-reasoning-cluster", 4, Severity.CRITICAL, Action.BLOCK, ScopeKind.GROUP, 86_400, False, ())
    detection = Detection(
        START,
        "cluster",
        "cl_sampled",
        accounts,
        (hit,),
        {"cluster.accounts": float(len(accounts)), "cluster.hour_entropy": math.nan},
        templates=(TemplateSample("5e1ec7ed0ddba11e", 812, "req_812"),),
    )
    CampaignStore(services.registry.engine).record([detection])
    app = create_app(services)
    app.state.events_dir = str(events_dir)
    _, viewer_token = services.create_token(ACTOR, "viewer", Role.VIEWER)
    with TestClient(app) as client:
        client.post("/console/login", data={"token": viewer_token})
        response = client.get("/console/campaigns/cl_sampled")
    assert response.status_code == 200
    page = response.text
    return page[page.index("Most repeated templates") : page.index("<h2>Rules</h2>")]


def test_without_the_campaign_s_requests_in_the_log_the_page_shows_detection_s_samples(
    services: AdminServices, tmp_path: Path
) -> None:
    org = services.create_org(ACTOR, "proxy")
    accounts = tuple(sorted(services.create_account(ACTOR, org.id).id for _ in range(2)))
    templates = _campaign_page(services, tmp_path / "rolled-over", accounts)
    assert "<code>5e1ec7ed0ddb</code>" in templates and "<td>812</td>" in templates


def test_with_the_campaign_s_requests_in_the_log_the_page_counts_them_there(
    services: AdminServices, tmp_path: Path
) -> None:
    org = services.create_org(ACTOR, "proxy")
    accounts = tuple(sorted(services.create_account(ACTOR, org.id).id for _ in range(2)))
    log = EventLog(tmp_path / "events")
    for i in range(6):
        log.append(
            RequestEvent(
                time=START + 60 * i,
                request_id=f"req_{i}",
                endpoint="/v1/chat/completions",
                account_id=accounts[i % 2],
                status=200,
                template_hash="0123456789abcdef",
            )
        )
    log.close()
    templates = _campaign_page(services, tmp_path / "events", accounts)
    assert "<code>0123456789ab</code>" in templates and "<td>6</td>" in templates
    assert "5e1ec7ed" not in templates
