"""Prompt corpora: the shared research corpora read at run time, and the built-in generator without them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from hydraguard.sim import builtin, corpora, generate
from hydraguard.sim.scenario import Corpora, Scenario
from tests.sim.conftest import SHARED_DATA, needs_shared_data, read, read_events, shortened


@needs_shared_data
def test_the_shared_corpora_are_read_from_the_repository_parent() -> None:
    texts = corpora.load(Corpora(), seed=1)
    legit = SHARED_DATA / "prompts" / "legit.jsonl"
    assert not any(info.builtin for info in texts.info.values())
    assert texts.info["legit"].sha256 == hashlib.sha256(legit.read_bytes()).hexdigest()
    with legit.open(encoding="utf-8") as lines:
        ids = [json.loads(line)["id"] for line in lines]
    assert [r.id for r in texts.legit] == ids
    assert sum(len(r.turns) > 1 for r in texts.legit) > 1000  # multi-turn records keep their turns
    assert any(r.system is not None for r in texts.extraction)  # Orca-style system messages
    assert {r.corpus for r in texts.templates} == {"templates"} and len(texts.templates) > 1000


@needs_shared_data
def test_outputs_name_the_records_they_used(tmp_path: Path) -> None:
    manifest = generate.simulate(shortened("seed-hydra-small", 1), tmp_path)
    assert manifest["builtin_prompts"] is False
    assert manifest["corpora"]["extraction"]["path"] == "../shared/data/prompts/extraction.jsonl"  # type: ignore[index]
    origins = read(tmp_path, "prompts.parquet")["origin"].to_pylist()
    legit_ids = {json.loads(x)["id"] for x in (SHARED_DATA / "prompts" / "legit.jsonl").open(encoding="utf-8")}
    used = {o.split(":", 1)[1].split("#")[0] for o in origins if o.startswith("legit:")}
    assert used and used <= legit_ids


def test_without_corpora_the_builtin_generator_is_used_and_said(tmp_path: Path) -> None:
    scenario = shortened("seed-hydra-small", 2)
    bare = Scenario.model_validate(
        {
            **scenario.model_dump(mode="json"),
            "corpora": {"legit": None, "extraction": "missing.jsonl", "templates": None},
        }
    )
    manifest = generate.simulate(bare, tmp_path, materialize_text=True)
    assert manifest["builtin_prompts"] is True
    assert {name: info["builtin"] for name, info in manifest["corpora"].items()} == {  # type: ignore[attr-defined]
        "legit": True,
        "extraction": True,
        "templates": True,
    }
    kinds = set(read(tmp_path, "prompts.parquet")["kind"].to_pylist())
    assert {"conversation", "template", "cot", "rubric"} <= kinds
    origins = read(tmp_path, "prompts.parquet")["origin"].to_pylist()
    assert all(o.startswith(("builtin-legit:", "builtin-extraction:")) for o in origins)
    events = read_events(tmp_path, ["status", "prompt_text", "prompt_chars", "message_count"]).to_pylist()
    served = [e for e in events if e["status"] == 200]
    assert served and all(len(e["prompt_text"]) == e["prompt_chars"] + e["message_count"] - 1 for e in served)


def test_builtin_generator_is_deterministic_and_varied() -> None:
    first, again = builtin.legit_records(500, seed=4), builtin.legit_records(500, seed=4)
    assert first == again
    assert len({r.turns[0] for r in first}) > 300
    assert any(len(r.turns) > 1 for r in first)
    tasks = builtin.extraction_records(300, seed=4)
    assert {r.area for r in tasks} == {"coding", "reasoning", "general"}
    assert builtin.filler(200, 7) == builtin.filler(200, 7) and 190 <= len(builtin.filler(200, 7)) <= 201
