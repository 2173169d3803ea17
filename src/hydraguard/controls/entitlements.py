"""A tier's entitlements enforced on one request: each parameter beyond them is clamped (the forwarded
body is rewritten into range) or refused, as configured. Checking reads only the request description
the gateway has already made, so a request within its entitlements costs no parsing."""

from __future__ import annotations

from typing import Any

from hydraguard.config import Entitlements
from hydraguard.controls import parameters as p
from hydraguard.controls.refusal import ControlRefusal
from hydraguard.gateway.requests import RequestInfo

DEFAULT_TEMPERATURE = 1.0  # what upstreams use when a request sets none


class EntitlementPolicy:
    def __init__(self, entitlements: Entitlements) -> None:
        self.entitlements = e = entitlements
        self.reasoning = e.reasoning
        self._refuse = frozenset(e.refuse)
        self._models = frozenset(e.models)
        self.unrestricted = (
            e.logprobs
            and e.max_top_logprobs is None
            and e.max_n is None
            and e.max_tokens is None
            and not e.models
            and e.temperature_min is None
            and e.temperature_max is None
            and e.tools
        )

    def violations(self, endpoint: str, info: RequestInfo) -> list[str]:
        """The parameters of this request beyond the entitlements (absent ones the tier bounds included)."""
        if self.unrestricted:
            return []
        e = self.entitlements
        found = []
        if self._models and info.model not in self._models:
            found.append("model")
        if endpoint not in p.GENERATING:
            return found
        if not e.logprobs and (info.logprobs or info.top_logprobs):
            found.append("logprobs")
        elif e.max_top_logprobs is not None and (info.top_logprobs or 0) > e.max_top_logprobs:
            found.append("top_logprobs")
        if e.max_n is not None and (info.n or 1) > e.max_n:
            found.append("n")
        if e.max_tokens is not None and (info.max_tokens is None or info.max_tokens > e.max_tokens):
            found.append("max_tokens")
        if self._temperature(info.temperature) is not None:
            found.append("temperature")
        if not e.tools and info.tools_count:
            found.append("tools")
        return found

    def enforce(self, endpoint: str, info: RequestInfo, violations: list[str], body: dict[str, Any]) -> list[str]:
        """Refuse (ControlRefusal) or clamp each violation; the applied controls, e.g. `clamp:n`."""
        for param in violations:
            if param in self._refuse and self._asked(param, info):
                raise self._refusal(param, info)
        e = self.entitlements
        for param in violations:
            if param == "model":
                body["model"] = e.models[0]
            elif param == "logprobs":
                p.drop_logprobs(endpoint, body)
            elif param == "top_logprobs":
                p.cap_top_logprobs(endpoint, body, e.max_top_logprobs or 0)
            elif param == "n":
                body["n"] = e.max_n
            elif param == "max_tokens":
                p.cap_max_tokens(endpoint, body, e.max_tokens or 1)
            elif param == "temperature":
                body["temperature"] = self._temperature(info.temperature)
            elif param == "tools":
                p.drop_tools(body)
        _reserve_clamped(info, violations, e)
        return ["clamp:" + param for param in violations]

    def _temperature(self, asked: float | None) -> float | None:
        """The bound to clamp to, or None when the temperature is within bounds."""
        value = DEFAULT_TEMPERATURE if asked is None else asked
        low, high = self.entitlements.temperature_min, self.entitlements.temperature_max
        if low is not None and value < low:
            return low
        if high is not None and value > high:
            return high
        return None

    @staticmethod
    def _asked(param: str, info: RequestInfo) -> bool:
        """A bound the request did not ask to exceed (an absent max_tokens, the default temperature) is
        applied, never refused."""
        if param == "max_tokens":
            return info.max_tokens is not None
        if param == "temperature":
            return info.temperature is not None
        return True

    def _refusal(self, param: str, info: RequestInfo) -> ControlRefusal:
        e = self.entitlements
        if param == "model":
            return ControlRefusal(
                403,
                "model_not_allowed",
                f"This account may not use the model `{info.model}`. Allowed: {', '.join(e.models)}.",
                "model",
            )
        high = 2 if e.temperature_max is None else e.temperature_max
        limits = {
            "logprobs": (info.logprobs or info.top_logprobs, "logprobs are not available to this account"),
            "top_logprobs": (info.top_logprobs, f"the most allowed is {e.max_top_logprobs}"),
            "n": (info.n, f"the most allowed is {e.max_n}"),
            "max_tokens": (info.max_tokens, f"the most allowed is {e.max_tokens}"),
            "temperature": (info.temperature, f"the allowed range is {e.temperature_min or 0} to {high}"),
            "tools": (info.tools_count, "tools are not available to this account"),
        }
        asked, rule = limits[param]
        return ControlRefusal(
            400, "parameter_not_allowed", f"`{param}` = {asked} is not allowed for this account: {rule}.", param
        )


def _reserve_clamped(info: RequestInfo, clamped: list[str], e: Entitlements) -> None:
    """Limits reserve what the clamped request can use."""
    if "max_tokens" not in clamped and "n" not in clamped:
        return
    n = e.max_n if "n" in clamped and e.max_n is not None else (info.n or 1)
    per_choice = info.reserve_completion_tokens // max(info.n or 1, 1)
    if "max_tokens" in clamped and e.max_tokens is not None:
        per_choice = min(per_choice, e.max_tokens)
        info.max_tokens = min(info.max_tokens or e.max_tokens, e.max_tokens)
    info.n = n
    info.reserve_completion_tokens = per_choice * n
