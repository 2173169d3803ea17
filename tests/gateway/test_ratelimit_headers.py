"""OpenAI's `x-ratelimit-*` headers from the limiter's quota states: the tightest rpm and tpm quota."""

from __future__ import annotations

from hydraguard.gateway.ratelimit_headers import format_duration, ratelimit_headers
from hydraguard.limits.base import QuotaState


def test_the_tightest_quota_of_each_kind_gives_the_headers() -> None:
    states = (
        QuotaState("rpm:key", 100, 40, 36.0),
        QuotaState("rpm:account", 60, 12, 48.0),  # fewest requests remaining
        QuotaState("tpm:account", 40_000, 9_000, 46.5),
        QuotaState("tpd:account", 1_000_000, 5, 86_000.0),  # daily quotas have no header
        QuotaState("tpm:org", 80_000, 9_000, 59.2),  # as few tokens remaining, full again later: tighter
        QuotaState("concurrency:key", 4, 3, 0.0),
    )
    assert ratelimit_headers(states) == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "12",
        "x-ratelimit-reset-requests": "48s",
        "x-ratelimit-limit-tokens": "80000",
        "x-ratelimit-remaining-tokens": "9000",
        "x-ratelimit-reset-tokens": "59s",
    }


def test_only_the_kinds_present_get_headers() -> None:
    assert ratelimit_headers(()) == {}
    assert ratelimit_headers([QuotaState("tpm:ip", 10, 0, 0.25)]) == {
        "x-ratelimit-limit-tokens": "10",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "250ms",
    }


def test_durations_in_openai_style() -> None:
    assert [format_duration(s) for s in (0.0004, 0.02, 1.0, 360.0, 3723.0)] == ["0ms", "20ms", "1s", "6m0s", "1h2m3s"]
