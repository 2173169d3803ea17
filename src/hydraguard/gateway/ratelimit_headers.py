"""OpenAI's `x-ratelimit-*` response headers from the limiter's quota states."""

from __future__ import annotations

from collections.abc import Iterable

from hydraguard.limits.base import QuotaState


def format_duration(seconds: float) -> str:
    """OpenAI's duration style: "20ms", "1s", "6m0s", "1h2m3s"."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _tightest(states: Iterable[QuotaState], prefix: str) -> QuotaState | None:
    matching = [s for s in states if s.name.startswith(prefix)]
    return min(matching, key=lambda s: (s.remaining, -s.reset_after)) if matching else None


def ratelimit_headers(states: Iterable[QuotaState]) -> dict[str, str]:
    states = list(states)
    headers: dict[str, str] = {}
    for prefix, suffix in (("rpm:", "requests"), ("tpm:", "tokens")):
        state = _tightest(states, prefix)
        if state is not None:
            headers[f"x-ratelimit-limit-{suffix}"] = str(state.limit)
            headers[f"x-ratelimit-remaining-{suffix}"] = str(state.remaining)
            headers[f"x-ratelimit-reset-{suffix}"] = format_duration(state.reset_after)
    return headers
