"""Configured TAXII feeds polled on their intervals: due by the store's record of the last poll, failures retried."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hydraguard.config import IntelConfig
from hydraguard.intel.export import campaign_bundle
from hydraguard.intel.schedule import poll_due
from hydraguard.intel.store import IntelStore
from hydraguard.intel.taxii import TaxiiCollection, taxii_app
from hydraguard.testing.servers import ThreadedServer, free_port

from .test_taxii import REPORT


@pytest.fixture
def store(tmp_path: Path) -> IntelStore:
    return IntelStore.from_url(f"sqlite:///{tmp_path}/registry.db")


@pytest.fixture
def served() -> Iterator[tuple[str, TaxiiCollection]]:
    collection = TaxiiCollection(id="feed-1", title="indicators")
    with ThreadedServer(taxii_app({collection.id: collection})) as server:
        yield server.url + "/hydraguard/", collection


def test_feeds_are_polled_when_due_and_a_dead_one_does_not_stop_the_others(served, store) -> None:
    root_url, collection = served
    collection.add_bundle(campaign_bundle(REPORT), now=1_700_000_000.0)
    dead = f"http://127.0.0.1:{free_port()}/api/"
    config = IntelConfig(
        feeds=[
            {"api_root": dead, "collection": "x", "interval": 600},
            {"api_root": root_url, "collection": "feed-1", "interval": 600},
        ]
    )
    now = time.time()
    first = poll_due(store, config, now=now)
    assert [o.result is None for o in first] == [True, False]
    assert "cannot connect" in first[0].error and first[1].result.applied.added == 11
    # within the interval only the failed feed is due again
    again = poll_due(store, config, now=now + 60)
    assert [o.feed.collection for o in again] == ["x"]
    later = poll_due(store, config, now=time.time() + 601)
    assert [o.feed.collection for o in later] == ["x", "feed-1"] and later[1].result.applied.added == 0
