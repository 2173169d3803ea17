"""Rate, token and concurrency limits enforced with GCRA, in memory or in Redis."""

from hydraguard.limits.base import Limiter, LimiterUnavailable, QuotaState, Slot, Verdict
from hydraguard.limits.gcra import Quota

__all__ = ["Limiter", "LimiterUnavailable", "Quota", "QuotaState", "Slot", "Verdict"]
