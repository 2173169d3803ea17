"""The controls one request gets: built once from the settings, prepared per request.

`prepare` returns None, after reading only the request description, when the tier allows everything the
request asks for, its reasoning mode is `raw`, no degrade decision applies and no signature comes back:
such a request is forwarded byte for byte and its answer relayed untouched. Otherwise the body is decoded
once, rewritten (clamps, restored traces, the degrade profile) and re-encoded only if anything changed,
and the answer passes through the reasoning control and the model alias."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec

from hydraguard.config import Entitlements, ReasoningMode, Settings
from hydraguard.controls.degrade import ModelAlias, apply_profile
from hydraguard.controls.entitlements import EntitlementPolicy
from hydraguard.controls.parameters import CHAT, RESPONSES
from hydraguard.controls.reasoning import ReasoningControl
from hydraguard.controls.responses_api import ResponsesReasoningStrip
from hydraguard.controls.restore import restore_traces
from hydraguard.controls.seal import Binding, Sealer, prefix_hashes
from hydraguard.controls.summary import Complete, Summarizer
from hydraguard.decide.model import Decision
from hydraguard.events.schema import RequestEvent
from hydraguard.gateway.requests import RequestInfo

log = logging.getLogger("hydraguard.controls")

RewriteEvent = Callable[[bytes, bytes], Awaitable[list[bytes]]]


class Applied:
    """The controls applied to one request, kept on its event's `controls` field."""

    def __init__(self, event: RequestEvent) -> None:
        self._event = event
        self._names: list[str] = []

    def __call__(self, name: str) -> None:
        if name not in self._names:
            self._names.append(name)
            self._event.controls = ",".join(self._names)


@dataclass(slots=True)
class Prepared:
    body: bytes  # to forward
    reasoning: ReasoningControl | ResponsesReasoningStrip | None
    alias: ModelAlias | None

    async def answer(self, data: bytes) -> bytes:
        """A JSON answer as the client gets it."""
        if self.alias is not None:
            data = self.alias.restore(data)
        if self.reasoning is not None:
            data = await self.reasoning.body(data)
        return data

    def stream(self) -> RewriteEvent:
        """A stream's rewriter: one upstream SSE event (and its data) in, the events to send out."""
        reasoning = self.reasoning.stream() if self.reasoning is not None else None
        alias = self.alias

        async def rewrite(event: bytes, data: bytes) -> list[bytes]:
            if alias is not None:
                event, data = alias.restore(event), alias.restore(data)
            if reasoning is not None:
                return await reasoning.rewrite(event, data)
            return [event]

        return rewrite


class Controls:
    def __init__(self, settings: Settings, complete: Complete) -> None:
        self._policies = {name: EntitlementPolicy(tier.entitlements) for name, tier in settings.tiers.items()}
        # an unknown tier gets the "free" tier's entitlements, as it gets its limits
        self._fallback = self._policies.get("free") or EntitlementPolicy(Entitlements())
        self._degrade = settings.degrade
        reasoning = settings.reasoning
        self._sealer = Sealer(settings.secret_bytes(), reasoning.seal_keys, reasoning.seal_ttl)
        self._summarizer = Summarizer(reasoning, complete)
        modes = [t.entitlements.reasoning for t in settings.tiers.values()]
        modes += [profile.reasoning for profile in settings.degrade.profiles.values()]
        self._signatures_issued = "sealed" in modes

    def prepare(
        self,
        endpoint: str,
        account_id: str,
        tier: str,
        info: RequestInfo,
        body: bytes,
        degrade: Decision | None,
        event: RequestEvent,
    ) -> Prepared | None:
        """Raises ControlRefusal for a refused parameter or a signature that does not open."""
        policy = self._policies.get(tier, self._fallback)
        violations = policy.violations(endpoint, info)
        mode: ReasoningMode = policy.reasoning
        profile_name = None
        if degrade is not None:
            profile_name = degrade.profile if degrade.profile in self._degrade.profiles else None
            if degrade.profile and profile_name is None:
                log.warning("degrade profile %r is not configured; using the default", degrade.profile)
            profile_name = profile_name or self._degrade.default_profile
            mode = self._degrade.profiles[profile_name].reasoning or mode
        restore = self._signatures_issued and endpoint == CHAT and b'"reasoning_signature"' in body
        controls_reasoning = mode != "raw" and endpoint in (CHAT, RESPONSES)
        if not (violations or degrade or restore or controls_reasoning):
            return None

        applied = Applied(event)
        request = msgspec.json.decode(body)
        changed = False
        if violations:
            for name in policy.enforce(endpoint, info, violations, request):
                applied(name)
            changed = True
        messages = request.get("messages") if endpoint == CHAT else None
        hashes = prefix_hashes(messages) if messages and (restore or mode == "sealed") else []
        if restore and messages and restore_traces(messages, hashes, self._sealer, account_id, info.model):
            applied("reasoning:restored")
            changed = True
        alias = None
        if profile_name is not None:
            profile = self._degrade.profiles[profile_name]
            alias = apply_profile(profile, endpoint, request)
            if profile.max_tokens is not None:
                info.reserve_completion_tokens = min(info.reserve_completion_tokens, profile.max_tokens * (info.n or 1))
            applied("degrade:" + profile_name)
            changed = True
        reasoning: ReasoningControl | ResponsesReasoningStrip | None = None
        if controls_reasoning and endpoint == RESPONSES:
            reasoning = ResponsesReasoningStrip(applied)
        elif controls_reasoning:
            binding = Binding(account_id, info.model, hashes[-1]) if hashes else None
            reasoning = ReasoningControl(
                mode,
                model=str(request.get("model", info.model)),
                binding=binding,
                sealer=self._sealer,
                summarizer=self._summarizer,
                record=applied,
            )
        return Prepared(msgspec.json.encode(request) if changed else body, reasoning, alias)
