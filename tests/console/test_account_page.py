"""The console's account page over HTTP: detection features against the typical account, and verification state."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from fastapi.testclient import TestClient

from hydraguard.accounts.risk import SignupRequest
from hydraguard.accounts.verification import Outcome
from hydraguard.admin.app import create_app
from hydraguard.admin.services import AdminServices
from hydraguard.admin.tokens import Role
from hydraguard.events.log import EventLog
from hydraguard.events.schema import RequestEvent
from tests.console.helpers import ACTOR, START


def _events(account_id: str, n: int, *, reasoning: float, area: str, ip: str) -> list[RequestEvent]:
    return [
        RequestEvent(
            time=START + 60 * i + 7,
            request_id=f"{account_id}-{i}",
            endpoint="/v1/chat/completions",
            account_id=account_id,
            client_ip=ip,
            user_agent="python-requests/2.32",
            message_count=1,
            reasoning_extraction_score=reasoning,
            capability_area=area,
            status=200,
            prompt_tokens=40,
            completion_tokens=200,
        )
        for i in range(n)
    ]


def _row(page: str, feature: str) -> str:
    found = re.search(rf'<tr class="[^"]*" data-feature="{feature}">.*?</tr>', page, re.S)
    assert found, f"no row for {feature}"
    return found.group(0)


def test_the_account_page_shows_features_and_verification(services: AdminServices, tmp_path: Path) -> None:
    harvester, record, challenge = asyncio.run(
        services.signup(
            ACTOR,
            SignupRequest(account_type="education", email="ml.lab7@mailinator.com", ip="198.51.100.7", region="DE"),
            org_name="lab",
        )
    )
    assert [s.name for s in record.signals] == ["disposable_email"] and challenge is not None
    asyncio.run(services.report_verification(ACTOR, harvester.id, "email", Outcome.VERIFIED))
    org = services.create_org(ACTOR, "acme")
    developers = [services.create_account(ACTOR, org.id) for _ in range(3)]

    log = EventLog(tmp_path / "events")
    for event in _events(harvester.id, 30, reasoning=0.9, area="reasoning", ip="203.0.113.5"):
        log.append(event)
    for n, developer in enumerate(developers):
        for event in _events(developer.id, 20, reasoning=0.0, area="writing", ip=f"192.0.2.{n + 1}"):
            log.append(event)
    log.close()

    app = create_app(services)
    app.state.events_dir = str(tmp_path / "events")
    _, viewer_token = services.create_token(ACTOR, "viewer", Role.VIEWER)
    with TestClient(app) as client:
        login = client.post("/console/login", data={"token": viewer_token, "next": "/console"}, follow_redirects=False)
        assert login.status_code == 303
        response = client.get(f"/console/accounts/{harvester.id}")
    assert response.status_code == 200
    page = response.text

    reasoning = _row(page, "reasoning_share")
    assert "hidden reasoning" in reasoning and 'class="unusual"' in reasoning
    assert ">100%<" in reasoning and "typical 0%" in reasoning and "far above typical<" in reasoning
    assert "typical" in _row(page, "requests") and ">30<" in _row(page, "requests")
    assert ">100%<" in _row(page, "extraction_area_share")
    assert "unusual" not in _row(page, "refusal_rate")
    assert "median of 3 accounts in no open or confirmed campaign" in page
    assert "-0%" not in page

    verification = page[page.index('id="verification"') :]
    assert "education" in verification
    assert "✓ email" in verification and "✗ identity (required)" in verification
    assert "disposable_email" in verification and "mailinator.com" in verification
    assert "verification required before first use" in verification
    assert f'<span class="score" style="--s:{record.score / 100}">{record.score}</span>' in verification
    assert "challenge</span> verify" in verification
    assert f"Tier</th><td>{harvester.tier}" in verification


def test_an_account_without_traffic_or_signup(services: AdminServices, tmp_path: Path) -> None:
    org = services.create_org(ACTOR, "acme")
    quiet = services.create_account(ACTOR, org.id)
    app = create_app(services)
    app.state.events_dir = str(tmp_path / "no-events")
    _, viewer_token = services.create_token(ACTOR, "viewer", Role.VIEWER)
    with TestClient(app) as client:
        client.post("/console/login", data={"token": viewer_token})
        page = client.get(f"/console/accounts/{quiet.id}").text
    assert "No requests in the event log." in page
    assert "Created without a signup assessment (counted as individual)." in page
    assert "✗ email (required)" in page
