"""Entitlements against request descriptions: what is a violation, how it is clamped, when refused."""

from __future__ import annotations

import msgspec
import pytest

from hydraguard.config import Entitlements
from hydraguard.controls.entitlements import EntitlementPolicy
from hydraguard.controls.parameters import CHAT, EMBEDDINGS, RESPONSES
from hydraguard.controls.refusal import ControlRefusal
from hydraguard.gateway.requests import describe_chat, describe_embedding, describe_response

USER = [{"role": "user", "content": "hi"}]


def chat(**fields):
    body = {"model": "m", "messages": USER, **fields}
    return describe_chat(msgspec.json.encode(body), 100), body


def test_default_entitlements_allow_everything():
    policy = EntitlementPolicy(Entitlements())
    assert policy.unrestricted
    info, _ = chat(n=8, logprobs=True, top_logprobs=20, temperature=2, max_tokens=10**6)
    assert policy.violations(CHAT, info) == []


def test_clamps_rewrite_the_body_and_the_reservation():
    policy = EntitlementPolicy(Entitlements(max_n=2, max_tokens=50, max_top_logprobs=3))
    info, body = chat(n=4, max_completion_tokens=500, logprobs=True, top_logprobs=10)
    violations = policy.violations(CHAT, info)
    assert violations == ["top_logprobs", "n", "max_tokens"]
    assert policy.enforce(CHAT, info, violations, body) == ["clamp:top_logprobs", "clamp:n", "clamp:max_tokens"]
    assert body["n"] == 2 and body["max_completion_tokens"] == 50 and body["top_logprobs"] == 3
    assert info.reserve_completion_tokens == 100


def test_within_bounds_is_no_violation():
    policy = EntitlementPolicy(Entitlements(max_n=2, max_tokens=50, temperature_min=0.5, temperature_max=1.5))
    info, _ = chat(n=2, max_tokens=50, temperature=0.5)
    assert policy.violations(CHAT, info) == []
    info, _ = chat(max_tokens=10)  # no temperature: the upstream's default 1.0 is in bounds
    assert policy.violations(CHAT, info) == []


def test_refusal_names_the_parameter_and_changes_nothing():
    policy = EntitlementPolicy(Entitlements(max_n=1, max_tokens=50, refuse=["n"]))
    info, body = chat(n=3, max_tokens=500)
    before = dict(body)
    with pytest.raises(ControlRefusal) as caught:
        policy.enforce(CHAT, info, policy.violations(CHAT, info), body)
    assert (caught.value.status, caught.value.param, caught.value.code) == (400, "n", "parameter_not_allowed")
    assert body == before


def test_responses_and_embeddings_use_their_own_fields():
    policy = EntitlementPolicy(Entitlements(max_tokens=20, logprobs=False, models=["a"]))
    body = {"model": "m", "input": "hi", "max_output_tokens": 90, "top_logprobs": 4}
    info = describe_response(msgspec.json.encode(body), 100)
    violations = policy.violations(RESPONSES, info)
    assert violations == ["model", "logprobs", "max_tokens"]
    policy.enforce(RESPONSES, info, violations, body)
    assert body == {"model": "a", "input": "hi", "max_output_tokens": 20}
    embedding = describe_embedding(b'{"model": "m", "input": "x"}', 100)
    assert policy.violations(EMBEDDINGS, embedding) == ["model"]


def test_bounds_must_be_ordered():
    with pytest.raises(ValueError, match="temperature_min"):
        Entitlements(temperature_min=1.5, temperature_max=1.0)
