from __future__ import annotations

import pytest
import sqlalchemy as sa

from hydraguard.intel.indicators import IndicatorKind, make_indicator
from hydraguard.intel.store import IntelStore, indicators_table

NOW = 1_700_000_000.0


def test_apply_merges_duplicates_within_and_across_feeds(store: IntelStore) -> None:
    a = make_indicator(
        "ip", "198.51.100.0/24", source="feed-a", confidence=30, first_seen=NOW - 100, last_seen=NOW - 50
    )
    a2 = make_indicator(
        "ip", "198.51.100.0/24", source="feed-a2", confidence=60, first_seen=NOW - 200, last_seen=NOW - 90
    )
    b = make_indicator("ip", "198.51.100.0/24", source="feed-b", confidence=40, first_seen=NOW, expires_at=NOW + 10)
    version = store.version()
    assert store.apply([a, a2]).added == 1
    result = store.apply([b, make_indicator("asn", "AS64500", source="feed-b", now=NOW)])
    assert (result.added, result.updated) == (1, 1)
    merged = store.get(a.id)
    assert merged is not None
    assert merged.sources == ("feed-a", "feed-a2", "feed-b")
    assert (merged.confidence, merged.first_seen, merged.last_seen, merged.expires_at) == (60, NOW - 200, NOW, None)
    assert store.version() == version + 2
    assert store.apply([b]).updated == 0 and store.version() == version + 2  # nothing new: no change, same version


def test_list_filters_by_kind_and_expiry_and_remove(store: IntelStore) -> None:
    live = make_indicator("email_domain", "evil.example", source="t", now=NOW)
    dead = make_indicator("ip", "192.0.2.1", source="t", now=NOW, expires_at=NOW - 1)
    store.apply([live, dead])
    assert [i.id for i in store.list()] == [live.id, dead.id]
    assert [i.id for i in store.list(active_at=NOW)] == [live.id]
    assert [i.id for i in store.list(IndicatorKind.IP)] == [dead.id]
    assert store.index(now=NOW).match_signup("evil.example", None, "192.0.2.1", NOW) == (live.label,)
    assert store.purge_expired(NOW) == 1 and store.count() == 1
    assert store.remove(live.id) and not store.remove(live.id)
    assert store.count() == 0


def test_a_failing_feed_changes_nothing(store: IntelStore, engine: sa.Engine) -> None:
    store.apply([make_indicator("ip", "192.0.2.1", source="t", now=NOW)], feed="f", bookmark="b1")
    version = store.version()

    # a constraint the new rows break makes the database refuse the insert inside the transaction
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE UNIQUE INDEX ix_intel_test_kind_desc ON intel_indicators (kind, description)"))
    new = [make_indicator("asn", "AS1", source="t", now=NOW), make_indicator("ip", "192.0.2.2", source="t", now=NOW)]
    with pytest.raises(sa.exc.IntegrityError):
        store.apply(new, feed="f", bookmark="b2")
    assert store.count() == 1 and store.version() == version and store.bookmark("f") == "b1"
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(indicators_table)).scalar_one() == 1


def test_feed_bookmarks_are_kept(store: IntelStore) -> None:
    assert store.bookmark("taxii:x") is None
    store.apply([], feed="taxii:x", bookmark="2025-01-01T00:00:00.000000Z")
    store.apply([], feed="taxii:x", bookmark="2025-02-01T00:00:00.000000Z")
    assert store.bookmark("taxii:x") == "2025-02-01T00:00:00.000000Z"


def test_reopening_keeps_the_indicators(engine: sa.Engine) -> None:
    indicator = make_indicator("user_agent", "^curl/", source="t", now=NOW)
    IntelStore(engine).apply([indicator])
    assert IntelStore(engine).get(indicator.id) == indicator
