"""Campaigns persisted: detections folded into members, timeline, status and notes; calibration counts."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from hydraguard.decide.model import ScopeKind
from hydraguard.detect.campaigns import CampaignNotFound, CampaignStatus, CampaignStore
from hydraguard.detect.engine import Detection
from hydraguard.detect.rules import Action, Hit, Severity
from hydraguard.detect.samples import TemplateSample


def hit(rule: str, action: Action = Action.BLOCK) -> Hit:
    return Hit(rule, 1, Severity.CRITICAL, action, ScopeKind.GROUP, 86400, False, (f"{rule} fired",))


def detection(at: float, accounts: tuple[str, ...], *hits: Hit, subject: str = "cl_1") -> Detection:
    return Detection(
        at,
        "cluster",
        subject,
        accounts,
        hits or (hit("hydra-reasoning-cluster"),),
        {"cluster.accounts": float(len(accounts)), "cluster.hour_entropy": math.nan},
        ("payment shared by 2 accounts",),
        (("payment", "pf_abc"),),
    )


@pytest.fixture
def store(tmp_path: Path) -> CampaignStore:
    return CampaignStore(sa.create_engine(f"sqlite:///{tmp_path / 'registry.db'}"))


def test_detections_of_one_subject_fold_into_one_campaign_that_grows(store: CampaignStore) -> None:
    store.record([detection(100.0, ("a1", "a2"))])
    store.record([detection(200.0, ("a1", "a2", "a3"), hit("hydra-reasoning-cluster"), hit("hydra-sync"))])
    (campaign,) = store.list()
    assert (campaign.id, campaign.level, campaign.status) == ("cl_1", "cluster", CampaignStatus.OPEN)
    assert campaign.accounts == ("a1", "a2", "a3")
    assert (campaign.first_detected, campaign.last_detected) == (100.0, 200.0)
    assert campaign.rules == ("hydra-reasoning-cluster", "hydra-sync") and campaign.enforcing
    assert campaign.indicators == (("payment", "pf_abc"),)
    assert campaign.features == {"cluster.accounts": 3.0, "cluster.hour_entropy": None}  # NaN stored as null
    kinds = [(e.at, e.kind) for e in store.timeline("cl_1")]
    assert kinds == [(100.0, "detected"), (100.0, "rule"), (200.0, "grew"), (200.0, "rule")]
    grew = store.timeline("cl_1")[2].detail
    assert grew == {"added": 1, "accounts": 3, "sample": ["a3"]}


def test_a_repeated_detection_adds_nothing_to_the_timeline(store: CampaignStore) -> None:
    store.record([detection(100.0, ("a1", "a2"))])
    store.record([detection(200.0, ("a1", "a2"))])
    assert len(store.timeline("cl_1")) == 2
    assert store.get("cl_1").last_detected == 200.0


def test_dismissing_is_remembered_across_store_instances_and_reopening_lifts_it(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'r.db'}")
    store = CampaignStore(engine)
    store.record([detection(100.0, ("a1", "a2"))])
    store.set_status("cl_1", CampaignStatus.DISMISSED, "analyst:ana", "a company's teams")
    assert CampaignStore(engine).dismissed("cl_1")
    store.set_status("cl_1", CampaignStatus.OPEN, "analyst:ana")
    assert not store.dismissed("cl_1") and not CampaignStore(engine).dismissed("cl_1")
    status = [e.detail for e in store.timeline("cl_1") if e.kind == "status"]
    assert status[0] == {"from": "open", "to": "dismissed", "note": "a company's teams"}


def test_notes_and_unknown_campaigns(store: CampaignStore) -> None:
    store.record([detection(100.0, ("a1", "a2"))])
    store.add_note("cl_1", "analyst:bo", "same card issuer as last month's cluster")
    assert store.timeline("cl_1")[-1].detail == {"text": "same card issuer as last month's cluster"}
    with pytest.raises(CampaignNotFound):
        store.add_note("cl_404", "analyst:bo", "x")
    with pytest.raises(CampaignNotFound):
        store.set_status("cl_404", CampaignStatus.CONFIRMED, "analyst:bo")
    with pytest.raises(ValueError, match="needs some text"):
        store.add_note("cl_1", "analyst:bo", "  ")
    assert len(store.timeline("cl_1")) == 3  # nothing added by the refused calls


def test_calibration_counts_verdicts_per_rule(store: CampaignStore) -> None:
    store.record([detection(1.0, ("a1", "a2"), hit("r1"), hit("r2"), subject="c1")])
    store.record([detection(1.0, ("b1", "b2"), hit("r1"), subject="c2")])
    store.record([detection(1.0, ("d1", "d2"), hit("r2"), subject="c3")])
    store.set_status("c1", CampaignStatus.CONFIRMED, "analyst:ana")
    store.set_status("c2", CampaignStatus.DISMISSED, "analyst:ana")
    assert store.calibration() == {
        "r1": {"open": 0, "confirmed": 1, "dismissed": 1},
        "r2": {"open": 1, "confirmed": 1, "dismissed": 0},
    }


def test_list_filters_by_status_and_orders_by_score_then_size(store: CampaignStore) -> None:
    store.record([detection(1.0, ("a1", "a2"), hit("low", Action.FLAG), subject="small")])
    store.record([detection(1.0, ("b1", "b2", "b3"), subject="big")])
    assert [c.id for c in store.list()] == ["big", "small"]
    store.set_status("big", CampaignStatus.CONFIRMED, "analyst:ana")
    assert [c.id for c in store.list(CampaignStatus.OPEN)] == ["small"]
    assert not store.get("small").enforcing


def test_a_dismissal_made_elsewhere_reaches_a_running_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hydraguard.detect import campaigns as campaigns_module

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'r.db'}")
    worker_side, admin_side = CampaignStore(engine), CampaignStore(engine)
    worker_side.record([detection(100.0, ("a1", "a2"))])
    assert not worker_side.dismissed("cl_1")
    admin_side.set_status("cl_1", CampaignStatus.DISMISSED, "analyst:ana")
    monkeypatch.setattr(campaigns_module, "DISMISSED_REFRESH", 0.0)
    assert worker_side.dismissed("cl_1")


def test_a_campaign_keeps_its_sample_templates_merged_across_detections(store: CampaignStore) -> None:
    first = replace(
        detection(100.0, ("a1", "a2")),
        templates=(TemplateSample("t_expert", 40, "req_1"), TemplateSample("t_grader", 10, "req_2")),
    )
    later = replace(detection(200.0, ("a1", "a2", "a3")), templates=(TemplateSample("t_grader", 45, "req_9"),))
    store.record([first])
    store.record([later, detection(300.0, ("a1", "a2", "a3"))])  # a detection without samples keeps them
    campaign = store.get("cl_1")
    assert campaign.templates == (
        {"template_hash": "t_grader", "requests": 55, "example_request_id": "req_9"},
        {"template_hash": "t_expert", "requests": 40, "example_request_id": "req_1"},
    )
    assert campaign.as_json()["templates"] == list(campaign.templates)
    many = tuple(TemplateSample(f"t_{i}", 100 + i, f"req_{i}") for i in range(7))
    store.record([replace(detection(400.0, ("b1",), subject="cl_2"), templates=many)])
    assert [t["template_hash"] for t in store.get("cl_2").templates] == ["t_6", "t_5", "t_4", "t_3", "t_2"]
