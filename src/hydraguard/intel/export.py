"""A detected campaign as a STIX 2.1 bundle that other labs and CTI platforms (OpenCTI, MISP) can read.

The bundle holds the producer's Identity, the Campaign, an Attack-Pattern for MITRE ATLAS "Extract ML
Model" (AML.T0024.002), one Indicator per campaign indicator, Observed-Data with the template signatures
and client fingerprints, a Sighting of the campaign, and the Relationships between them. It carries
hashes, networks and domains only: no account ids, no email addresses, no prompts.

Ids are derived from the producer and the campaign's own id (UUIDv5), so a re-export of a growing campaign
is a new version of the same objects rather than new objects.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass

import stix2
from stix2.properties import IntegerProperty, StringProperty

from hydraguard.detect.request import MINHASH_BANDS, MINHASH_ROWS
from hydraguard.intel import stixmap
from hydraguard.intel.indicators import IndicatorKind, normalize

_NAMESPACE = uuid.UUID("af39eee0-1651-4f12-bf85-6e9719fba8b8")  # hydraguard's, fixed forever
ATLAS_EXTRACT_MODEL = "AML.T0024.002"
TEMPLATE_SCHEME = "minhash-lsh-word3"


@stix2.v21.CustomObservable(
    "x-hydraguard-template-signature",
    [
        ("value", StringProperty(required=True)),  # the band keys as hex, band after band
        ("scheme", StringProperty(required=True)),  # how the prompt skeleton was hashed
        ("bands", IntegerProperty(required=True, min=1)),
        ("rows", IntegerProperty(required=True, min=1)),
    ],
    id_contrib_props=["value"],
)
class TemplateSignature:
    """A prompt template's MinHash signature: `bands` LSH band keys of `rows` hashes each, 8 hex digits per
    band, over word 3-shingles of the prompt's skeleton (`detect.request.template_fingerprint`). Two fillings
    of one template share band keys; the prompt text cannot be recovered from it."""


@stix2.v21.CustomObservable(
    "x-hydraguard-client-fingerprint",
    [("value", StringProperty(required=True))],  # client family and version, e.g. "OpenAI/Python/1.40"
    id_contrib_props=["value"],
)
class ClientFingerprint:
    """The client software a campaign's requests came from (`detect.request.client_fingerprint`)."""


@dataclass(frozen=True)
class CampaignReport:
    """What a campaign export says. `indicators` are (kind, value) pairs of `IndicatorKind`s: payment
    fingerprint hashes, networks and addresses, ASNs, email domains, user-agent patterns, key fingerprints,
    template signatures. `member_count` is how many accounts took part: a number, never who."""

    id: str
    name: str
    first_seen: float
    last_seen: float
    member_count: int
    indicators: tuple[tuple[IndicatorKind | str, str], ...]
    client_fingerprints: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    score: float = 0.0
    confidence: int = 75
    description: str = ""


def _id(kind: str, *parts: str) -> str:
    return f"{kind}--{uuid.uuid5(_NAMESPACE, '|'.join(parts))}"


def _when(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def campaign_bundle(report: CampaignReport, *, producer: str = "hydraguard", now: float | None = None) -> stix2.Bundle:
    """The campaign as a STIX 2.1 bundle; ValueError (IndicatorError) for an indicator that is not valid."""
    if report.last_seen < report.first_seen or report.member_count < 0:
        raise ValueError("a campaign's last_seen precedes its first_seen, or its member count is negative")
    indicators = sorted({(IndicatorKind(k), normalize(k, v)) for k, v in report.indicators})
    created, modified = _when(report.first_seen), _when(time.time() if now is None else now)
    versions = {"created": created, "modified": max(created, modified)}
    identity = stix2.Identity(id=_id("identity", producer), name=producer, identity_class="organization", **versions)
    by = {"created_by_ref": identity.id, **versions}
    attack_pattern = stix2.AttackPattern(
        id=_id("attack-pattern", producer, ATLAS_EXTRACT_MODEL),
        name="Extract ML Model",
        description="Querying a model's API to train a copy of it (distillation, model extraction).",
        external_references=[
            {
                "source_name": "mitre-atlas",
                "external_id": ATLAS_EXTRACT_MODEL,
                "url": f"https://atlas.mitre.org/techniques/{ATLAS_EXTRACT_MODEL}",
            }
        ],
        **by,
    )
    campaign = stix2.Campaign(
        id=_id("campaign", producer, report.id),
        name=report.name,
        description=report.description or f"Model-extraction campaign across {report.member_count} accounts.",
        first_seen=_when(report.first_seen),
        last_seen=_when(report.last_seen),
        objective="Extract the capabilities of a hosted model through its API.",
        confidence=report.confidence,
        custom_properties={
            "x_hydraguard_score": report.score,
            "x_hydraguard_rules": sorted(report.rules),
            "x_hydraguard_member_count": report.member_count,
        },
        **by,
    )
    objects: list[object] = [identity, attack_pattern, campaign]
    objects.append(_relationship("uses", campaign.id, attack_pattern.id, by))
    observables: list[object] = []
    for kind, value in indicators:
        indicator = stix2.Indicator(
            id=_id("indicator", producer, kind, value),
            name=f"{kind} seen in campaign {report.name}",
            indicator_types=["malicious-activity"],
            pattern=stixmap.pattern_of(kind, value),
            pattern_type="stix",
            valid_from=_when(report.first_seen),
            confidence=report.confidence,
            allow_custom=True,
            **by,
        )
        objects += [indicator, _relationship("indicates", indicator.id, campaign.id, by)]
        if kind is IndicatorKind.TEMPLATE_SIGNATURE:
            observables.append(
                TemplateSignature(value=value, scheme=TEMPLATE_SCHEME, bands=MINHASH_BANDS, rows=MINHASH_ROWS)
            )
    observables += [ClientFingerprint(value=value) for value in sorted(set(report.client_fingerprints))]
    observed_refs = []
    if observables:
        observed = stix2.ObservedData(
            id=_id("observed-data", producer, report.id),
            first_observed=_when(report.first_seen),
            last_observed=_when(report.last_seen),
            number_observed=max(1, report.member_count),
            object_refs=[o.id for o in observables],  # type: ignore[attr-defined]
            allow_custom=True,
            **by,
        )
        objects += [*observables, observed]
        observed_refs = [observed.id]
    objects.append(
        stix2.Sighting(
            id=_id("sighting", producer, report.id),
            sighting_of_ref=campaign.id,
            where_sighted_refs=[identity.id],
            observed_data_refs=observed_refs or None,
            first_seen=_when(report.first_seen),
            last_seen=_when(report.last_seen),
            count=report.member_count,  # the accounts it was sighted in
            **by,
        )
    )
    return stix2.Bundle(objects=objects, allow_custom=True)


def _relationship(kind: str, source: str, target: str, by: dict[str, object]) -> stix2.Relationship:
    return stix2.Relationship(
        id=_id("relationship", kind, source, target),
        relationship_type=kind,
        source_ref=source,
        target_ref=target,
        **by,
    )
