"""A prompt record: the shared corpora's JSONL record (`../shared/data/README.md`) as the simulator uses it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Record:
    id: str
    corpus: str  # which corpus it came from: `legit`, `extraction`, `templates`, or a built-in generator
    turns: tuple[str, ...]  # the user turns, in order
    system: str | None = None
    area: str = "general"  # capability area: coding, agentic, reasoning, general
    category: str | None = None
