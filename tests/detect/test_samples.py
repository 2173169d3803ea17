"""Sample templates: the templates a detection's accounts used most among the latest events."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from hydraguard.detect.samples import RecentTemplates, TemplateSample


def rows(accounts: list[int], hashes: list[str | None], first_id: int = 0) -> tuple[np.ndarray, pa.Array, pa.Array]:
    ids = [f"req_{first_id + i}" for i in range(len(accounts))]
    return np.array(accounts, dtype=np.int64), pa.array(hashes, pa.string()), pa.array(ids, pa.string())


def test_the_most_used_templates_of_the_accounts_with_their_latest_request() -> None:
    recent = RecentTemplates()
    recent.add(*rows([0, 1, 0, 0, 2, 1], ["aa", "bb", "cc", "aa", "aa", "bb"]))
    recent.add(*rows([1, 0, 1], ["cc", None, "bb"], first_id=6))
    assert recent.of(np.array([0])) == (TemplateSample("aa", 2, "req_3"), TemplateSample("cc", 1, "req_2"))
    # accounts 0 and 1: bb 3, aa 2, cc 2; ties go to the template seen first (aa before cc)
    both = recent.of(np.array([1, 0]))
    assert both == (
        TemplateSample("bb", 3, "req_8"),
        TemplateSample("aa", 2, "req_3"),
        TemplateSample("cc", 2, "req_6"),
    )
    assert recent.of(np.array([1, 0]), top=1) == both[:1]
    assert recent.of(np.array([7])) == ()  # no events of its own among the latest


def test_only_the_latest_events_are_kept() -> None:
    recent = RecentTemplates(size=4)
    recent.add(*rows([0, 0, 0], ["old", "old", "old"]))
    recent.add(*rows([0, 0], ["new", "new"], first_id=3))
    assert recent.of(np.array([0])) == (TemplateSample("old", 3, "req_2"), TemplateSample("new", 2, "req_4"))
    recent.add(*rows([0, 0], ["new", "new"], first_id=5))  # the first batch leaves: 4 events held after it
    assert recent.of(np.array([0])) == (TemplateSample("new", 4, "req_6"),)


def test_a_table_s_chunked_columns_are_read_too() -> None:
    recent = RecentTemplates()
    accounts, hashes, ids = rows([3, 3], ["aa", "bb"])
    recent.add(accounts, pa.chunked_array([hashes[:1], hashes[1:]]), pa.chunked_array([ids[:1], ids[1:]]))
    assert recent.of(np.array([3])) == (TemplateSample("aa", 1, "req_0"), TemplateSample("bb", 1, "req_1"))
