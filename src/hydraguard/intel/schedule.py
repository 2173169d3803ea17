"""Polling the configured TAXII feeds (`[intel] feeds`) on their intervals.

A feed is due when its interval has passed since it was last applied, as the store records it (`intel_feeds`):
the schedule survives restarts, and a failed poll (nothing applied) is simply due again on the next round.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from hydraguard.config import IntelConfig, TaxiiFeed
from hydraguard.intel.feeds import FeedError, FeedLimits
from hydraguard.intel.poll import PollResult, collection_url, poll_taxii
from hydraguard.intel.store import IntelStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedOutcome:
    feed: TaxiiFeed
    result: PollResult | None
    error: str | None = None


def feed_name(feed: TaxiiFeed) -> str:
    """The name `poll_taxii` records the feed under."""
    return f"taxii:{collection_url(feed.api_root, feed.collection)}"


def due(store: IntelStore, feed: TaxiiFeed, now: float) -> bool:
    applied = store.applied_at(feed_name(feed))
    return applied is None or now - applied >= feed.interval


def poll_due(store: IntelStore, config: IntelConfig, *, now: float | None = None) -> list[FeedOutcome]:
    """Poll every feed that is due, each all or nothing; a failing feed does not stop the others."""
    now = time.time() if now is None else now
    limits = FeedLimits(max_bytes=config.max_feed_bytes, max_indicators=config.max_feed_indicators)
    outcomes = []
    for feed in config.feeds:
        if not due(store, feed, now):
            continue
        password = os.environ.get(feed.password_env) if feed.password_env else None
        try:
            result = poll_taxii(
                store, feed.api_root, feed.collection, user=feed.user or None, password=password, limits=limits
            )
        except FeedError as exc:
            log.warning("TAXII feed %s not applied: %s", feed_name(feed), exc.summary)
            outcomes.append(FeedOutcome(feed, None, str(exc)))
            continue
        outcomes.append(FeedOutcome(feed, result))
    return outcomes
