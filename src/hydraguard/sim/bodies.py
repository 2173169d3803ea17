"""The request body a simulated client sends: messages plus a sampling profile, as JSON bytes.

The simulator describes these bytes with the gateway's own `describe_chat`, so simulated events carry exactly
what the gateway would record; a replay sends the same bytes to a live gateway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

Messages = list[dict[str, str]]


@dataclass(frozen=True, slots=True)
class Profile:
    """A client's sampling parameters (None: the field is left out of the body)."""

    model: str
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    n: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: str | None = None
    tools: str | None = None  # the name of a built-in tool set


def chat_body(messages: Messages, profile: Profile, tools: list[dict[str, Any]] | None = None) -> bytes:
    """The /v1/chat/completions body; `tools` are the definitions of `profile.tools`."""
    body: dict[str, Any] = {"model": profile.model, "messages": messages}
    if profile.stream:
        body["stream"] = True
    for name in ("temperature", "top_p", "max_tokens", "n", "logprobs", "top_logprobs"):
        value = getattr(profile, name)
        if value is not None:
            body[name] = value
    if profile.response_format is not None:
        body["response_format"] = {"type": profile.response_format}
    if tools:
        body["tools"] = tools
    return msgspec.json.encode(body)
