"""Threat intelligence in detection: indicators the gateway matched (and shared template signatures the engine
matches) become account features and evidence that links accounts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from hydraguard.detect.engine import Engine, EngineSettings
from hydraguard.detect.linkage import Evidence, EvidenceLog
from hydraguard.detect.request import template_fingerprint
from hydraguard.events.schema import RequestEvent, events_to_table
from hydraguard.intel.index import IntelIndex
from hydraguard.intel.indicators import IndicatorKind, make_indicator

SHARED = "Rate the candidate answer below from 1 to 10 against this rubric and explain each point: {task}"
OTHER = "Write a short poem about the sea, in the voice of a lighthouse keeper, for my niece: {task}"


def event(n: int, account: str, text: str | None = None, intel: str | None = None) -> RequestEvent:
    signature = template_fingerprint(text)[1] if text else None
    return RequestEvent(
        time=1_767_225_600.0 + n,
        request_id=f"req_{n}",
        endpoint="/v1/chat/completions",
        account_id=account,
        status=200,
        template_signature=signature,
        intel_matches=intel,
    )


def test_accounts_matching_the_same_indicator_share_evidence_named_by_its_label() -> None:
    table = events_to_table(
        [event(0, "a", intel="ip:ind_1,user_agent:ind_2"), event(1, "b", intel="ip:ind_1"), event(2, "c")]
    )
    log = EvidenceLog()
    log.observe_events(np.array([0, 1, 2]), table)
    account, kind, value, _ = log.incidences()
    intel = kind == int(Evidence.INTEL)
    assert sorted(zip(account[intel].tolist(), [log.name(v) for v in value[intel].tolist()], strict=True)) == [
        (0, "ip:ind_1"),
        (0, "user_agent:ind_2"),
        (1, "ip:ind_1"),
    ]


def test_the_engine_matches_shared_template_signatures_and_counts_intel_per_account() -> None:
    signature = template_fingerprint(SHARED.format(task="the capital of France is Paris"))[1]
    indicator = make_indicator(IndicatorKind.TEMPLATE_SIGNATURE, signature, source="peer-lab")
    index = IntelIndex([indicator])
    engine = Engine(settings=EngineSettings(), intel=index)
    events = [event(i, "acct_x", SHARED.format(task=f"task number {i} about rivers")) for i in range(10)]
    events += [event(10 + i, "acct_y", OTHER.format(task=f"verse {i}")) for i in range(10)]
    engine.observe(events_to_table(events))
    numbers = engine.accounts.numbers(pa.array(["acct_x", "acct_y"]))
    shares = engine.account_features(numbers)["intel_share"]
    assert shares[0] > 0.5 and shares[1] == 0.0
    _, kinds, values, _ = engine.evidence.incidences()
    labels = {
        engine.evidence.name(v) for k, v in zip(kinds.tolist(), values.tolist(), strict=True) if k == Evidence.INTEL
    }
    assert labels == {indicator.label}


def test_without_intel_the_feature_is_zero_and_no_intel_evidence_exists() -> None:
    engine = Engine()
    engine.observe(events_to_table([event(i, "acct_x", SHARED.format(task=str(i))) for i in range(5)]))
    assert engine.account_features(np.array([0]))["intel_share"].tolist() == [0.0]
    assert not (engine.evidence.incidences()[1] == int(Evidence.INTEL)).any()
