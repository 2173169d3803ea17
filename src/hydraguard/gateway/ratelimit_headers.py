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
    """From the tightest requests-per-minute and tokens-per-minute quotas (fewest remaining)."""
    tightest: dict[str, QuotaState] = {}
    for state in states:
        kind = state.name[:4]
        if kind in _SUFFIX:
            best = tightest.get(kind)
            if best is None or (state.remaining, -state.reset_after) < (best.remaining, -best.reset_after):
                tightest[kind] = state
    headers: dict[str, str] = {}
    for kind, state in tightest.items():
        suffix = _SUFFIX[kind]
        headers[f"x-ratelimit-limit-{suffix}"] = str(state.limit)
        headers[f"x-ratelimit-remaining-{suffix}"] = str(state.remaining)
        headers[f"x-ratelimit-reset-{suffix}"] = format_duration(state.reset_after)
    return headers


_SUFFIX = {"rpm:": "requests", "tpm:": "tokens"}
