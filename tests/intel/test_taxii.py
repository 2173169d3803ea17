from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import stix2
from taxii2client.v21 import Server, as_pages

from hydraguard.intel.export import CampaignReport, campaign_bundle
from hydraguard.intel.feeds import FeedError, FeedLimits
from hydraguard.intel.poll import poll_taxii
from hydraguard.intel.store import IntelStore
from hydraguard.intel.taxii import TaxiiCollection, taxii_app
from hydraguard.testing.servers import ThreadedServer, free_port

REPORT = CampaignReport(
    id="camp_1",
    name="hydra-1",
    first_seen=1_700_000_000.0,
    last_seen=1_700_086_400.0,
    member_count=5,
    indicators=(*tuple(("ip", f"198.51.100.{i}") for i in range(10)), ("email_domain", "evil.example")),
)


@pytest.fixture
def store(tmp_path: Path) -> IntelStore:
    return IntelStore.from_url(f"sqlite:///{tmp_path}/registry.db")


@pytest.fixture
def served() -> Iterator[tuple[str, TaxiiCollection]]:
    collection = TaxiiCollection(id="91a7b528-80eb-42ed-a74d-c6fbd5a26116", title="campaigns")
    with ThreadedServer(taxii_app({collection.id: collection})) as server:
        yield server.url + "/hydraguard/", collection


def test_taxii2_client_discovers_and_pages_through_the_collection(served: tuple[str, TaxiiCollection]) -> None:
    root_url, collection = served
    collection.add_bundle(campaign_bundle(REPORT), now=1_700_000_000.0)
    server = Server(root_url.replace("/hydraguard/", "/taxii2/"))
    (api_root,) = server.api_roots
    (remote,) = api_root.collections
    assert (remote.id, remote.can_read, remote.can_write) == (collection.id, True, False)
    pages = list(as_pages(remote.get_objects, per_request=7))
    objects = [obj for page in pages for obj in page["objects"]]
    assert len(pages) > 2 and [p["more"] for p in pages][-1] is False
    assert {o["type"] for o in objects} >= {"campaign", "indicator", "attack-pattern", "identity", "sighting"}
    assert len(objects) == len(campaign_bundle(REPORT).objects)


def test_polling_applies_everything_once_and_keeps_a_bookmark(
    served: tuple[str, TaxiiCollection], store: IntelStore
) -> None:
    root_url, collection = served
    collection.add_bundle(campaign_bundle(REPORT), now=1_700_000_000.0)
    first = poll_taxii(store, root_url, collection.id, per_request=5)
    assert first.applied.added == 11 and first.pages > 3
    assert first.bookmark is not None and first.bookmark.startswith("2023-11-14T22:13:20")
    again = poll_taxii(store, root_url, collection.id)
    assert (again.applied.added, again.applied.updated, len(again.feed.indicators)) == (0, 0, 0)
    later = CampaignReport(**{**REPORT.__dict__, "id": "camp_2", "indicators": (("asn", "AS64500"),)})
    collection.add_bundle(campaign_bundle(later), now=1_700_000_100.0)
    third = poll_taxii(store, root_url, collection.id)
    assert third.applied.added == 1 and len(third.feed.indicators) == 1
    assert store.count() == 12


def test_invalid_stix_on_the_server_applies_nothing(served: tuple[str, TaxiiCollection], store: IntelStore) -> None:
    root_url, collection = served
    good = stix2.Indicator(pattern="[ipv4-addr:value = '192.0.2.1']", pattern_type="stix")
    bad = {"type": "indicator", "spec_version": "2.1", "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f"}
    collection.add_bundle({"type": "bundle", "objects": [_plain(good), bad]})
    with pytest.raises(FeedError, match="indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f: invalid STIX") as caught:
        poll_taxii(store, root_url, collection.id)
    assert caught.value.parsed == 1
    assert store.count() == 0 and store.bookmark(f"taxii:{root_url}collections/{collection.id}/") is None


def test_oversized_collections_are_refused(served: tuple[str, TaxiiCollection], store: IntelStore) -> None:
    root_url, collection = served
    collection.add_bundle(campaign_bundle(REPORT))
    with pytest.raises(FeedError, match="over 2000 bytes"):
        poll_taxii(store, root_url, collection.id, limits=FeedLimits(max_bytes=2_000))
    with pytest.raises(FeedError, match="more than 5 objects"):
        poll_taxii(store, root_url, collection.id, per_request=3, limits=FeedLimits(max_indicators=5))
    assert store.count() == 0


def test_unreachable_and_unknown_servers_give_clear_errors(
    served: tuple[str, TaxiiCollection], store: IntelStore
) -> None:
    with pytest.raises(FeedError, match="cannot connect"):
        poll_taxii(store, f"http://127.0.0.1:{free_port()}/api/", "x", timeout=2)
    root_url, _ = served
    with pytest.raises(FeedError, match="404"):
        poll_taxii(store, root_url, "no-such-collection")
    assert store.count() == 0


def _plain(obj: stix2.Indicator) -> dict[str, object]:
    return json.loads(obj.serialize())
