"""What the upstream answers: completion tokens, reported prompt tokens, finish reason and latencies.

Plausible rather than exact: a prompt's answer length is fixed per prompt (a property of the question) with
some per-request noise, capped by `max_tokens`; latency is time to first token plus decoding time, slower for
large models. Refused requests (banned accounts) never reach the upstream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FINISH_REASONS = ("stop", "length", "tool_calls")
CHARS_PER_TOKEN = 3.7  # a real tokenizer's average on English text (the gateway's estimate uses 4)
TOOLS_TOKENS = 45  # prompt tokens per tool definition


@dataclass
class Outcome:
    completion_tokens: np.ndarray  # -1: none (refused)
    prompt_tokens: np.ndarray  # -1: none
    finish: np.ndarray  # index into FINISH_REASONS, -1: none
    latency_ms: np.ndarray
    upstream_ms: np.ndarray  # NaN: none


def answer(
    rng: np.random.Generator,
    prompt: np.ndarray,
    profile: np.ndarray,
    book_answer: np.ndarray,
    book_chars: np.ndarray,
    book_messages: np.ndarray,
    profiles: dict[str, np.ndarray],
    model_speed: np.ndarray,
) -> Outcome:
    """Outcomes for requests (prompt index, profile index); prompt -1 marks a refused request."""
    n = len(prompt)
    served = prompt >= 0
    p, q = np.where(served, prompt, 0), np.where(served, profile, 0)
    wanted = np.maximum(1, np.rint(book_answer[p] * np.exp(0.25 * rng.standard_normal(n)))).astype(np.int64)
    cap = profiles["max_tokens"][q]
    capped = (cap > 0) & (wanted > cap)
    per_choice = np.where(capped, cap, wanted)
    completion = per_choice * profiles["n"][q]
    tools = profiles["tools"][q]
    finish = np.where(capped, 1, np.where(tools & (rng.random(n) < 0.6), 2, 0))
    prompt_tokens = np.rint(book_chars[p] / CHARS_PER_TOKEN).astype(np.int64) + 3 * book_messages[p] + 3
    prompt_tokens += np.where(tools, profiles["tools_count"][q] * TOOLS_TOKENS, 0)
    speed = model_speed[profiles["model"][q]]
    first_token = 180 + 320 * np.exp(0.45 * rng.standard_normal(n)) + 0.02 * prompt_tokens
    decode = per_choice * speed * np.exp(0.3 * rng.standard_normal(n))
    overhead = 1.0 + rng.exponential(1.5, n)
    stream = profiles["stream"][q]
    upstream = np.where(stream, first_token, first_token + decode)
    latency = np.where(stream, first_token + decode, upstream) + overhead
    return Outcome(
        completion_tokens=np.where(served, completion, -1),
        prompt_tokens=np.where(served, prompt_tokens, -1),
        finish=np.where(served, finish, -1),
        latency_ms=np.where(served, latency, overhead),
        upstream_ms=np.where(served, upstream, np.nan),
    )
