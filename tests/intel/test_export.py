from __future__ import annotations

import json

import pytest
from stix2validator import validate_instance, validate_string

from hydraguard.detect.request import MINHASH_BANDS, signature_bands
from hydraguard.intel.export import ATLAS_EXTRACT_MODEL, CampaignReport, campaign_bundle
from hydraguard.intel.feeds import parse_stix
from hydraguard.intel.index import IntelIndex
from hydraguard.intel.indicators import IndicatorError, IndicatorKind, normalize

SIGNATURE = "0123abcd" * MINHASH_BANDS
REPORT = CampaignReport(
    id="camp_42",
    name="hydra-42",
    first_seen=1_700_000_000.0,
    last_seen=1_700_086_400.0,
    member_count=37,
    indicators=(
        ("payment_fingerprint", "ab" * 16),
        ("ip", "198.51.100.0/24"),
        ("ip", "2001:db8::/48"),
        ("asn", "AS64500"),
        ("email_domain", "evil.example"),
        ("template_signature", SIGNATURE),
        ("user_agent", r"^python-requests/\d+"),
        ("key_fingerprint", "cd" * 32),
    ),
    client_fingerprints=("OpenAI/Python/1.40",),
    rules=("template-reuse", "payment-linkage"),
    score=0.93,
)


def _objects(bundle_json: str) -> dict[str, list[dict[str, object]]]:
    by_type: dict[str, list[dict[str, object]]] = {}
    for obj in json.loads(bundle_json)["objects"]:
        by_type.setdefault(obj["type"], []).append(obj)
    return by_type


def test_the_bundle_is_valid_stix_2_1() -> None:
    text = campaign_bundle(REPORT, now=1_700_090_000.0).serialize(pretty=True)
    results = validate_string(text)
    assert results.is_valid, [str(e) for e in results.errors]
    assert validate_instance(json.loads(text)).is_valid


def test_the_bundle_says_campaign_atlas_technique_indicators_and_sighting() -> None:
    text = campaign_bundle(REPORT, producer="lab-a", now=1_700_090_000.0).serialize()
    objects = _objects(text)
    (campaign,) = objects["campaign"]
    (identity,) = objects["identity"]
    (attack,) = objects["attack-pattern"]
    assert campaign["name"] == "hydra-42" and campaign["x_hydraguard_member_count"] == 37
    assert campaign["first_seen"].startswith("2023-11-14T22:13:20")
    assert identity["name"] == "lab-a" and campaign["created_by_ref"] == identity["id"]
    assert {"source_name": "mitre-atlas", "external_id": ATLAS_EXTRACT_MODEL}.items() <= attack["external_references"][
        0
    ].items()
    assert len(objects["indicator"]) == len(REPORT.indicators)
    relations = {(r["relationship_type"], r["source_ref"], r["target_ref"]) for r in objects["relationship"]}
    assert ("uses", campaign["id"], attack["id"]) in relations
    assert all(("indicates", i["id"], campaign["id"]) in relations for i in objects["indicator"])
    (sighting,) = objects["sighting"]
    assert sighting["sighting_of_ref"] == campaign["id"] and sighting["count"] == 37
    (signature,) = objects["x-hydraguard-template-signature"]
    assert (signature["value"], signature["bands"], signature["rows"]) == (SIGNATURE, MINHASH_BANDS, 2)
    (observed,) = objects["observed-data"]
    assert signature["id"] in observed["object_refs"]
    assert objects["x-hydraguard-client-fingerprint"][0]["value"] == "OpenAI/Python/1.40"


def test_re_exports_are_new_versions_of_the_same_objects() -> None:
    first = _objects(campaign_bundle(REPORT, now=1_700_090_000.0).serialize())
    later = _objects(campaign_bundle(REPORT, now=1_700_190_000.0).serialize())
    assert first["campaign"][0]["id"] == later["campaign"][0]["id"]
    assert first["campaign"][0]["modified"] < later["campaign"][0]["modified"]


def test_no_personal_data_is_exported() -> None:
    with pytest.raises(IndicatorError, match="never an address"):
        campaign_bundle(CampaignReport(**{**REPORT.__dict__, "indicators": (("email_domain", "a@evil.example"),)}))
    text = campaign_bundle(REPORT).serialize()
    assert "@evil.example" not in text.replace("%@evil.example", "") and "acct_" not in text


def test_the_exported_bundle_imports_back_and_matches() -> None:
    feed = parse_stix(campaign_bundle(REPORT).serialize().encode(), source="lab-a")
    assert feed.skipped_total == 0
    assert {(i.kind, i.value) for i in feed.indicators} == {
        (IndicatorKind(k), normalize(k, v)) for k, v in REPORT.indicators
    }
    index = IntelIndex(feed.indicators)
    now = 1_700_100_000.0
    assert len(index.match("198.51.100.77", "python-requests/2.31", "cd" * 32, now)) == 3
    assert len(index.match("2001:db8::9", None, None, now)) == 1
    assert len(index.match_signup("mail.evil.example", "ab" * 16, None, now)) == 2
    assert len(index.match_templates(signature_bands(SIGNATURE), now)) == 1
