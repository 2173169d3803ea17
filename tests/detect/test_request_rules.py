"""Request rules in the engine: each request is matched as it is folded in, and the hits are tallied per key,
account or address until the next analysis, which emits them as `request` detections the policy enforces."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from hydraguard.decide.model import ScopeKind
from hydraguard.decide.policy import Policy
from hydraguard.detect.engine import Detection, Engine, EngineSettings
from hydraguard.detect.rules import RuleError, RuleSet, parse_rule
from hydraguard.events.schema import RequestEvent, events_to_table

HOUR = 3600.0
T0 = 493_334 * HOUR  # on an hour boundary (in 2026)


def request_rule(rule_id: str, condition: str, scope: str) -> Any:
    data = {
        "id": rule_id,
        "version": 1,
        "title": rule_id,
        "description": "test",
        "rationale": "test",
        "source": "test",
        "level": "request",
        "severity": "medium",
        "action": "degrade",
        "scope": scope,
        "ttl": "1h",
        "when": {"all": [condition]},
    }
    return parse_rule(yaml.safe_dump(data), f"{rule_id}.yaml")


RULES = RuleSet(
    (
        request_rule("elicits", "request.reasoning_extraction_score >= 0.9", "key"),
        request_rule("guesses-keys", "request.refusal_reason == invalid_api_key", "ip"),
    )
)


def event(n: int, **fields: Any) -> RequestEvent:
    values: dict[str, Any] = {"status": 200, "client_ip": "198.51.100.9", "message_count": 1}
    values.update(fields)
    return RequestEvent(time=T0 + 60.0 * n, request_id=f"req_{n}", endpoint="/v1/chat/completions", **values)


def run(events: list[RequestEvent], until: float) -> list[Detection]:
    engine = Engine(RULES, EngineSettings())
    detections = engine.observe(events_to_table(events))
    return detections + engine.advance(until)


def test_hits_are_tallied_per_subject_and_emitted_at_the_next_analysis() -> None:
    events = [event(n, account_id="acct_a", key_id="key_a", reasoning_extraction_score=0.95) for n in range(3)]
    events.append(event(3, account_id="acct_b", key_id="key_b", reasoning_extraction_score=0.6))
    events.append(event(4, account_id=None, reasoning_extraction_score=0.99))  # no key: nothing to act on
    events += [event(5 + n, status=401, refusal_reason="invalid_api_key", client_ip="203.0.113.5") for n in range(2)]
    events.append(event(61, account_id="acct_a", key_id="key_a", reasoning_extraction_score=0.95))  # next hour
    detections = run(events, T0 + 2 * HOUR)
    first = [d for d in detections if d.at == T0 + HOUR]
    assert sorted(d.subject for d in first) == ["ip:203.0.113.5", "key:key_a"]
    by_subject = {d.subject: d for d in first}
    key = by_subject["key:key_a"]
    assert (key.level, key.accounts, [h.rule_id for h in key.hits]) == ("request", ("acct_a",), ["elicits"])
    assert key.hits[0].reasons == ("request.reasoning_extraction_score = 0.95 (>= 0.9)", "3 matching requests")
    assert key.features["request.reasoning_extraction_score"] == 0.95
    address = by_subject["ip:203.0.113.5"]
    assert address.accounts == () and address.hits[0].reasons[-1] == "2 matching requests"
    assert address.features["request.refusal_reason"] == "invalid_api_key"
    # the tally starts again after each analysis: the next hour holds one request
    (later,) = [d for d in detections if d.at > T0 + HOUR]
    assert later.subject == "key:key_a" and later.hits[0].reasons[-1] == "1 matching requests"


def test_a_subject_s_hits_are_merged_across_batches_and_rules() -> None:
    rules = RuleSet(
        (
            request_rule("elicits-from", "request.reasoning_extraction_score >= 0.9", "ip"),
            request_rule("guesses-keys", "request.refusal_reason == invalid_api_key", "ip"),
        )
    )
    engine = Engine(rules, EngineSettings())
    first = [event(n, account_id=f"acct_{n}", key_id=f"key_{n}", reasoning_extraction_score=0.95) for n in (0, 1)]
    second = [
        event(2, status=401, refusal_reason="invalid_api_key"),
        event(3, account_id="acct_0", key_id="key_0", reasoning_extraction_score=0.97),
        event(4, account_id="acct_2", key_id="key_2", client_ip="203.0.113.5", reasoning_extraction_score=0.3),
    ]
    detections = engine.observe(events_to_table(first)) + engine.observe(events_to_table(second))
    (detection,) = detections + engine.advance(T0 + HOUR)
    assert (detection.subject, detection.accounts) == ("ip:198.51.100.9", ("acct_0", "acct_1"))
    assert [(h.rule_id, h.reasons[-1]) for h in detection.hits] == [
        ("elicits-from", "3 matching requests"),
        ("guesses-keys", "1 matching requests"),
    ]
    assert detection.hits[0].reasons[0] == "request.reasoning_extraction_score = 0.97 (>= 0.9)"  # its latest request
    assert detection.features["request.reasoning_extraction_score"] == 0.97  # the latest request of either rule


def test_the_policy_acts_on_the_key_or_the_address_a_request_rule_names() -> None:
    events = [event(0, account_id="acct_a", key_id="key_a", reasoning_extraction_score=0.95)]
    events.append(event(1, status=401, refusal_reason="invalid_api_key", client_ip="2001:db8::7"))
    detections = run(events, T0 + HOUR)
    decisions = [d for detection in detections for d in Policy().plan(detection, T0 + HOUR).decisions]
    assert sorted((d.scope, d.value, d.expires_at - d.created_at) for d in decisions) == [
        (ScopeKind.IP, "2001:db8::7", HOUR),
        (ScopeKind.KEY, "key_a", HOUR),
    ]


def test_the_shipped_request_rule_is_in_shadow_and_enforces_nothing() -> None:
    engine = Engine()
    # an hour's requests, then one an hour: emitted once, not every hour (no decision to renew)
    events = [event(n, account_id="acct_a", key_id="key_a", reasoning_extraction_score=0.95) for n in range(3)]
    events += [event(60 * h, account_id="acct_a", key_id="key_a", reasoning_extraction_score=0.95) for h in (1, 2, 3)]
    detections = engine.observe(events_to_table(events)) + engine.advance(T0 + 4 * HOUR)
    (detection,) = [d for d in detections if d.level == "request"]
    assert detection.subject == "key:key_a" and [h.rule_id for h in detection.hits] == ["reasoning-extraction-request"]
    assert not detection.enforcing and Policy().plan(detection, T0 + HOUR).decisions == ()


def test_a_request_rule_on_a_field_the_engine_does_not_read_is_refused() -> None:
    with pytest.raises(RuleError, match=r"hot\.yaml(.|\n)*a request rule reads .*; not request\.temperature"):
        request_rule("hot", "request.temperature >= 1.5", "key")
