"""The console end to end in a real browser: Playwright driving Debian's Chromium against the demo's stack (gateway,
mock model, detection worker, admin app), with a campaign found by detection in replayed traffic."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hydraguard.console import demo
from hydraguard.detect.campaigns import CampaignStore
from hydraguard.gateway.build import open_registry
from hydraguard.sim import replay
from tests.sim.conftest import shortened

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (scripts/test)")
SPEEDUP = 600.0
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """The demo's stack with two replayed hours of seed-hydra-small in it, and the campaign detection found."""
    settings = demo.demo_settings(tmp_path_factory.mktemp("console"), SPEEDUP)
    window = replay.plan(shortened("seed-hydra-small", 1), hours=2)
    with demo.running(settings, SPEEDUP) as (gateway_url, console_url, token):
        registry = open_registry(settings)
        wall_start = time.time() + 1.0
        seeded = replay.seed_registry(registry, window, wall_start=wall_start, speedup=SPEEDUP)
        outcome = asyncio.run(replay.send(window, seeded, gateway_url, wall_start=wall_start, speedup=SPEEDUP))
        assert outcome.transport_errors == 0
        truth = {a for a, role in seeded.role_of(window).items() if role == replay.CAMPAIGN}
        store = CampaignStore(registry.engine)
        deadline = time.monotonic() + 30
        found = None
        while found is None and time.monotonic() < deadline:
            found = next((c for c in store.list() if c.level == "cluster" and set(c.accounts) <= truth), None)
            time.sleep(0.5)
        registry.close()
        assert found is not None, "detection found no campaign in the replayed traffic"
        yield console_url, token, found.id


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=BROWSER_ARGS)
        yield launched
        launched.close()


def _shoot(page: Any, name: str) -> None:
    """Screenshots for docs/ when HYDRAGUARD_CONSOLE_SCREENSHOTS names a directory."""
    directory = os.environ.get("HYDRAGUARD_CONSOLE_SCREENSHOTS")
    if directory:
        page.screenshot(path=str(Path(directory) / f"console-{name}.png"), full_page=True)


def test_an_analyst_finds_the_campaign_blocks_it_and_sees_the_decision_and_its_audit_entry(
    stack: tuple[str, str, str], browser: Any
) -> None:
    console_url, token, campaign_id = stack
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(console_url)
    assert "/console/login" in page.url  # no token, no console
    page.fill("input[name=token]", "hga_not-a-real-token")
    page.click("button")
    assert page.get_by_role("alert").inner_text() == "unknown or revoked token"

    page.fill("input[name=token]", token)
    page.click("button")
    assert page.url == console_url
    assert page.get_by_role("heading", name="Open campaigns").is_visible()
    _shoot(page, "overview")

    page.click("nav >> text=Campaigns")
    page.click(f"a:text('{campaign_id}')")
    assert page.url.endswith(f"/console/campaigns/{campaign_id}")
    assert page.locator("#evidence-graph circle.account").count() >= 2
    analyst_decisions = page.locator("tr.decision", has_text="token:demo-analyst")
    assert analyst_decisions.count() == 0  # detection's own decisions may be there already
    _shoot(page, "campaign")

    page.fill("input[name=note]", "hydra cluster: shared cards, synchronized")
    page.click("button[value=block]")
    assert page.get_by_role("status").inner_text() == "Done: block"
    assert analyst_decisions.count() == 1
    assert analyst_decisions.locator("td.t-block").inner_text() == "block"
    assert page.locator("tr.audit-entry", has_text="campaign.block").count() == 1
    assert "token:demo-analyst" in page.locator("tr.audit-entry", has_text="campaign.block").inner_text()

    page.click("nav >> text=Audit log")
    entry = page.locator("tr.audit-entry", has_text="campaign.block").first
    assert campaign_id in entry.inner_text() and "token:demo-analyst" in entry.inner_text()
    assert page.get_by_text("Chain: intact").is_visible()
    _shoot(page, "audit")

    page.click("nav >> text=Rules")
    assert page.locator("td", has_text="enforcing").count() >= 1
    _shoot(page, "rules")
    page.goto(f"{console_url}/campaigns/{campaign_id}")
    page.click("#evidence-graph a >> nth=0", force=True)
    assert "/console/accounts/" in page.url
    assert page.get_by_text(campaign_id).first.is_visible()
    _shoot(page, "account")
    page.close()
