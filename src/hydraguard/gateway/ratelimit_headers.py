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


def ratelimit_headers(states: Iterable[QuotaState]) -> dict[str, str]:
    """From the tightest requests-per-minute and tokens-per-minute quotas (fewest remaining, then the
    longest until full)."""
    requests: QuotaState | None = None
    tokens: QuotaState | None = None
    for state in states:  # every request's dozen states: plain comparisons, no per-state allocations
        name = state.name
        if name.startswith("rpm:"):
            if requests is None or _tighter(state, requests):
                requests = state
        elif name.startswith("tpm:") and (tokens is None or _tighter(state, tokens)):
            tokens = state
    headers: dict[str, str] = {}
    if requests is not None:
        headers["x-ratelimit-limit-requests"] = str(requests.limit)
        headers["x-ratelimit-remaining-requests"] = str(requests.remaining)
        headers["x-ratelimit-reset-requests"] = format_duration(requests.reset_after)
    if tokens is not None:
        headers["x-ratelimit-limit-tokens"] = str(tokens.limit)
        headers["x-ratelimit-remaining-tokens"] = str(tokens.remaining)
        headers["x-ratelimit-reset-tokens"] = format_duration(tokens.reset_after)
    return headers


def _tighter(state: QuotaState, than: QuotaState) -> bool:
    return state.remaining < than.remaining or (
        state.remaining == than.remaining and state.reset_after > than.reset_after
    )
