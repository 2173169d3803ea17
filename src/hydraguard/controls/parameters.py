"""Where each endpoint keeps the parameters that entitlements and degrade profiles rewrite."""

from __future__ import annotations

from typing import Any

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
RESPONSES = "/v1/responses"
EMBEDDINGS = "/v1/embeddings"

GENERATING = frozenset((CHAT, COMPLETIONS, RESPONSES))
EFFORTS = ("minimal", "low", "medium", "high")


def cap_max_tokens(endpoint: str, body: dict[str, Any], cap: int) -> bool:
    """Lower the answer's token limit to `cap` (setting it when the request has none); whether it changed."""
    fields = ("max_output_tokens",) if endpoint == RESPONSES else ("max_tokens", "max_completion_tokens")
    present = [f for f in fields if isinstance(body.get(f), int)]
    if not present:
        body[fields[0]] = cap
        return True
    changed = False
    for field in present:
        if body[field] > cap:
            body[field] = cap
            changed = True
    return changed


def drop_logprobs(endpoint: str, body: dict[str, Any]) -> bool:
    fields = ("logprobs",) if endpoint == COMPLETIONS else ("logprobs", "top_logprobs")
    found = [f for f in fields if body.get(f) not in (None, False)]
    for field in fields:
        body.pop(field, None)
    return bool(found)


def cap_top_logprobs(endpoint: str, body: dict[str, Any], cap: int) -> None:
    body["logprobs" if endpoint == COMPLETIONS else "top_logprobs"] = cap


def drop_tools(body: dict[str, Any]) -> None:
    for field in ("tools", "tool_choice", "parallel_tool_calls"):
        body.pop(field, None)


def cap_reasoning_effort(endpoint: str, body: dict[str, Any], cap: str) -> bool:
    """Lower a requested reasoning effort to `cap`. A request without one is left alone: models that do
    not reason refuse the parameter."""
    if endpoint == RESPONSES:
        holder = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
        current, field = holder.get("effort"), "effort"
    elif endpoint == CHAT:
        holder, field = body, "reasoning_effort"
        current = body.get(field)
    else:
        return False
    if current is None or (current in EFFORTS and cap in EFFORTS and EFFORTS.index(current) <= EFFORTS.index(cap)):
        return False
    holder[field] = cap
    if endpoint == RESPONSES:
        body["reasoning"] = holder
    return True
