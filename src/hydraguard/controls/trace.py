"""A reasoning trace and the two formats upstreams return it in: a message field (`reasoning_content`,
vLLM and DeepSeek; `reasoning`, newer vLLM) or inline at the start of the content as `<think>...</think>`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

REASONING_FIELDS = ("reasoning_content", "reasoning")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

Style = Literal["field", "think"]


@dataclass(frozen=True, slots=True)
class Trace:
    text: str
    style: Style
    field: str = REASONING_FIELDS[0]  # the field it came in (style "field")


def split_think(content: str) -> tuple[str, str] | None:
    """(trace, answer) when the content opens with a `<think>` block; an unclosed block (the answer was
    cut off while reasoning) is all trace. The answer loses the whitespace that separated it."""
    stripped = content.lstrip()
    if not stripped.startswith(THINK_OPEN):
        return None
    inner = stripped[len(THINK_OPEN) :]
    end = inner.find(THINK_CLOSE)
    if end < 0:
        return inner, ""
    return inner[:end], inner[end + len(THINK_CLOSE) :].lstrip()


def take_trace(message: dict[str, Any]) -> Trace | None:
    """Remove the reasoning trace from a chat message (or stream delta) and return it."""
    for field in REASONING_FIELDS:
        value = message.get(field)
        if isinstance(value, str):
            del message[field]
            return Trace(value, "field", field)
    content = message.get("content")
    if isinstance(content, str) and (split := split_think(content)) is not None:
        message["content"] = split[1]
        return Trace(split[0], "think")
    return None


def put_trace(message: dict[str, Any], trace: Trace) -> None:
    """Put a trace into a chat message, in the format it came in."""
    if trace.style == "field":
        message[trace.field] = trace.text
    else:
        message["content"] = THINK_OPEN + trace.text + THINK_CLOSE + "\n\n" + (message.get("content") or "")


class ThinkScanner:
    """`split_think` for a content stream that arrives in pieces, tags possibly split between them: `feed`
    returns the content to pass on now, holding back only the trace and what may still be part of a tag."""

    def __init__(self) -> None:
        self._state = "start"  # start | inside | after (the block closed) | content
        self._held = ""
        self.trace: list[str] = []

    @property
    def found(self) -> bool:
        return self._state in ("inside", "after") or bool(self.trace)

    @property
    def closed(self) -> bool:
        return self._state == "after" or (self._state == "content" and bool(self.trace))

    def feed(self, text: str) -> str:
        if self._state == "content":
            return text
        if self._state == "after":
            return self._after(text)
        if self._state == "inside":
            return self._inside(text)
        self._held += text
        head = self._held.lstrip()
        if not head or (len(head) < len(THINK_OPEN) and THINK_OPEN.startswith(head)):
            return ""
        if head.startswith(THINK_OPEN):
            self._state, self._held = "inside", ""
            return self._inside(head[len(THINK_OPEN) :])
        self._state, held, self._held = "content", self._held, ""
        return held

    def finish(self) -> str:
        """At the end of the choice: an unclosed block is all trace; content held at the start is released."""
        held, self._held = self._held, ""
        if self._state == "inside":
            self.trace.append(held)
            self._state = "after"
            return ""
        return held if self._state == "start" else ""

    def _inside(self, text: str) -> str:
        text = self._held + text
        end = text.find(THINK_CLOSE)
        if end >= 0:
            self.trace.append(text[:end])
            self._state, self._held = "after", ""
            return self._after(text[end + len(THINK_CLOSE) :])
        keep = _partial_suffix(text, THINK_CLOSE)
        self.trace.append(text[: len(text) - keep])
        self._held = text[len(text) - keep :]
        return ""

    def _after(self, text: str) -> str:
        text = text.lstrip()
        if text:
            self._state = "content"
        return text


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that could begin `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0
