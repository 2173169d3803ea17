"""Sealed traces sent back on a later turn: each assistant message's `reasoning_signature` is opened for
this account, model and conversation prefix, and the raw trace restored into the upstream request."""

from __future__ import annotations

from typing import Any

from hydraguard.controls.refusal import ControlRefusal
from hydraguard.controls.seal import Binding, Sealer, SignatureRefused
from hydraguard.controls.trace import put_trace


def restore_traces(messages: list[Any], prefix_hashes: list[str], sealer: Sealer, account_id: str, model: str) -> int:
    """Replace every signature in `messages` by its trace; how many. Any signature that does not open
    refuses the whole request."""
    opened = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "reasoning_signature" not in message:
            continue
        param = f"messages[{i}].reasoning_signature"
        signature = message["reasoning_signature"]
        if message.get("role") != "assistant" or not isinstance(signature, str):
            raise ControlRefusal(
                400, "invalid_reasoning_signature", f"`{param}` must be a string on an assistant message.", param
            )
        try:
            trace = sealer.open(signature, Binding(account_id, model, prefix_hashes[i]))
        except SignatureRefused as exc:
            raise ControlRefusal(
                400, "invalid_reasoning_signature", f"The reasoning signature in `{param}` {exc}.", param
            ) from exc
        opened.append((message, trace))
    for message, trace in opened:  # after every check: the hashes cover the messages as the client sent them
        del message["reasoning_signature"]
        put_trace(message, trace)
    return len(opened)
