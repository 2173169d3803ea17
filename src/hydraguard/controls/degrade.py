"""Quiet degradation: a degrade decision's profile rewrites the request (another model, a lower
max_tokens and reasoning effort, no logprobs) and the client sees a normal answer, its model's name
included."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from hydraguard.config import DegradeProfile
from hydraguard.controls import parameters as p


class ModelAlias:
    """Puts the requested model's name back where the answer names the model it was routed to."""

    def __init__(self, routed: str, requested: str) -> None:
        self._pattern = re.compile(rb'("model"\s*:\s*)' + re.escape(msgspec.json.encode(routed)))
        self._requested = msgspec.json.encode(requested)

    def restore(self, data: bytes) -> bytes:
        return self._pattern.sub(lambda match: match.group(1) + self._requested, data)


def apply_profile(profile: DegradeProfile, endpoint: str, body: dict[str, Any]) -> ModelAlias | None:
    """Rewrite the request by the profile (reasoning is the answer's business); the alias that hides a
    routed model, if any."""
    alias = None
    requested = body.get("model")
    if profile.model and isinstance(requested, str) and requested != profile.model:
        body["model"] = profile.model
        alias = ModelAlias(profile.model, requested)
    if endpoint in p.GENERATING:
        if profile.max_tokens is not None:
            p.cap_max_tokens(endpoint, body, profile.max_tokens)
        if profile.reasoning_effort is not None:
            p.cap_reasoning_effort(endpoint, body, profile.reasoning_effort)
        if profile.drop_logprobs:
            p.drop_logprobs(endpoint, body)
    return alias
