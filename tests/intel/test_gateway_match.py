"""Threat intel on the request path: matches recorded on the event and counted, the index refreshed in the
background when the store changes, and refusals only where `[intel] block_on_match` says so."""

from __future__ import annotations

import time

import httpx
import pytest

from hydraguard.intel.indicators import key_fingerprint, make_indicator
from hydraguard.intel.live import LiveIntel
from hydraguard.intel.store import IntelStore
from tests.gateway.helpers import assert_openai_error, one_event, post_chat, wait_for

CLIENT = "198.51.100.7"  # sent as X-Forwarded-For from the trusted loopback proxy
SCRAPER_UA = "distill-bot/2.1"


def start(start_gateway, **intel):
    return start_gateway(
        server={"trusted_proxies": ["127.0.0.1/32"]},
        intel={"refresh_interval": 0.05, **intel},
    )


def intel_store(gw) -> IntelStore:
    return IntelStore(gw.gateway.registry.engine)


def add(gw, kind: str, value: str, **kwargs) -> str:
    """Store an indicator and wait for the gateway's background refresh to load it; its label."""
    indicator = make_indicator(kind, value, source="test", **kwargs)
    store = intel_store(gw)
    store.apply([indicator])
    version = store.version()
    wait_for(lambda: gw.gateway.intel._version == version)
    return indicator.label


def request(gw, key: str, *, ip: str = CLIENT, user_agent: str = "Mozilla/5.0") -> httpx.Response:
    return post_chat(gw, key, headers={"x-forwarded-for": ip, "user-agent": user_agent})


def matches_metric(gw, kind: str) -> float:
    text = httpx.get(gw.url + "/metrics").text
    line = next((x for x in text.splitlines() if x.startswith(f'hydraguard_intel_matches_total{{kind="{kind}"}}')), "")
    return float(line.split()[-1]) if line else 0.0


def test_no_indicators_records_nothing(start_gateway):
    gw = start(start_gateway)
    _, key = gw.account()
    response = request(gw, key)
    assert response.status_code == 200
    assert one_event(gw, response).intel_matches is None
    assert gw.gateway.intel.loaded == 0


def test_ip_user_agent_and_leaked_key_are_recorded_not_refused(start_gateway):
    gw = start(start_gateway)
    _, key = gw.account()
    _, other_key = gw.account()
    network = add(gw, "ip", "198.51.100.0/24")
    agent = add(gw, "user_agent", r"^distill-bot/")
    leaked = add(gw, "key_fingerprint", key_fingerprint(key))

    response = request(gw, key, user_agent=SCRAPER_UA)
    assert response.status_code == 200  # block_on_match is off by default
    assert set(one_event(gw, response).intel_matches.split(",")) == {network, agent, leaked}

    clean = request(gw, other_key, ip="203.0.113.9")
    assert clean.status_code == 200 and one_event(gw, clean).intel_matches is None
    assert (matches_metric(gw, "ip"), matches_metric(gw, "user_agent"), matches_metric(gw, "key_fingerprint")) == (
        1.0,
        1.0,
        1.0,
    )


def test_removal_and_expiry_stop_matching(start_gateway):
    gw = start(start_gateway)
    _, key = gw.account()
    label = add(gw, "ip", CLIENT)
    expires = time.time() + 1.0
    agent = add(gw, "user_agent", "distill-bot", expires_at=expires)
    first = request(gw, key, user_agent=SCRAPER_UA)
    assert set(one_event(gw, first).intel_matches.split(",")) == {label, agent}
    assert intel_store(gw).remove(label.partition(":")[2])
    wait_for(lambda: gw.gateway.intel._version == intel_store(gw).version())
    time.sleep(max(0.0, expires - time.time()) + 0.05)  # expired: stops matching with no change to the store
    second = request(gw, key, user_agent=SCRAPER_UA)
    assert second.status_code == 200 and one_event(gw, second).intel_matches is None


def test_block_on_match_by_kind(start_gateway, upstream):
    gw = start(start_gateway, block_on_match=["ip"])
    _, key = gw.account()
    ip_label = add(gw, "ip", CLIENT)
    add(gw, "user_agent", r"^distill-bot/")
    forwarded = upstream[1].total

    blocked = request(gw, key)
    error = assert_openai_error(blocked, 403, code="blocked", type="permission_error")
    assert blocked.headers["x-request-id"] in error["message"] and "ind_" not in error["message"]
    event = one_event(gw, blocked)
    assert event.refusal_reason == "intel_blocked" and event.intel_matches == ip_label
    assert upstream[1].total == forwarded  # never reached the model

    # a kind not listed is recorded only
    other = request(gw, key, ip="203.0.113.9", user_agent=SCRAPER_UA)
    assert other.status_code == 200 and one_event(gw, other).intel_matches.startswith("user_agent:")


def test_block_on_match_needs_the_minimum_confidence(start_gateway):
    gw = start(start_gateway, block_on_match=["ip", "user_agent"], block_min_confidence=80)
    _, key = gw.account()
    add(gw, "ip", CLIENT, confidence=60)
    low = request(gw, key)
    assert low.status_code == 200 and one_event(gw, low).intel_matches.startswith("ip:")

    add(gw, "ip", CLIENT, confidence=90)  # the same indicator reported again, surer: merged, now blocking
    high = request(gw, key)
    assert_openai_error(high, 403, code="blocked")
    assert one_event(gw, high).refusal_reason == "intel_blocked"


def test_a_failing_store_keeps_the_last_index(tmp_path):
    store = IntelStore.from_url(f"sqlite:///{tmp_path}/intel.db")
    store.apply([make_indicator("ip", CLIENT, source="test")])
    live = LiveIntel(store)
    assert live.refresh() and not live.refresh()  # rebuilt once, then only when the version moves
    store.engine.dispose()
    (tmp_path / "intel.db").unlink()
    (tmp_path / "intel.db").mkdir()  # the database is gone: refresh fails
    with pytest.raises(Exception):  # noqa: B017 - whichever error the driver raises
        live.refresh()
    assert live.match(CLIENT, None, None, time.time()) is not None


def test_key_fingerprints_are_hashed_only_when_loaded(tmp_path):
    store = IntelStore.from_url(f"sqlite:///{tmp_path}/intel.db")
    store.apply([make_indicator("ip", CLIENT, source="test")])
    live = LiveIntel(store)
    live.refresh()
    assert not live._loaded.index.matches_key_fingerprints
    store.apply([make_indicator("key_fingerprint", key_fingerprint("sk-leaked"), source="test")])
    live.refresh()
    found = live.match("203.0.113.1", None, "sk-leaked", time.time())
    assert found is not None and found.kinds == ["key_fingerprint"] and not found.block
