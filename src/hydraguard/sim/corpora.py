"""Prompt corpora: JSONL records read at run time, or the built-in generator where a corpus is missing.

Paths in a scenario resolve against the repository root (the directory holding `pyproject.toml` above this
package, else the working directory), so `../shared/data/...` works from any working directory. Nothing of
a corpus is copied anywhere: outputs refer to records by id and name the corpus by path and SHA-256.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hydraguard.sim import builtin
from hydraguard.sim.records import Record
from hydraguard.sim.scenario import Corpora

BUILTIN_LEGIT_RECORDS = 2_000
BUILTIN_EXTRACTION_RECORDS = 1_500

# capability area of a corpus record, by source (and category where the source mixes areas)
_AREAS = {
    "codealpaca-2k": "coding",
    "alpaca-seed": "reasoning",
    "orca-sysprompt": "reasoning",
    "selfinstruct-useroriented": "general",
}
_CATEGORY_AREAS = {"coding": "coding", "math": "reasoning", "reasoning": "reasoning", "stem": "reasoning"}


def repo_root() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    return Path.cwd()


@dataclass(frozen=True)
class CorpusInfo:
    """What the manifest says about a corpus: where it came from, its digest, or that it was built in."""

    name: str
    path: str | None
    sha256: str | None
    records: int
    builtin: bool

    def as_dict(self) -> dict[str, object]:
        return {"path": self.path, "sha256": self.sha256, "records": self.records, "builtin": self.builtin}


def _resolve(path: str | None) -> Path | None:
    if path is None:
        return None
    candidate = Path(path)
    return candidate if candidate.is_absolute() else repo_root() / candidate


def _area(source: str, category: str | None) -> str:
    return _AREAS.get(source) or _CATEGORY_AREAS.get(category or "", "general")


def _read_jsonl(path: Path, corpus: str) -> list[Record]:
    records = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if not line.strip():
                continue
            raw = json.loads(line)
            records.append(
                Record(
                    id=raw["id"],
                    corpus=corpus,
                    turns=tuple(raw["turns"]),
                    system=raw.get("system"),
                    area=_area(raw.get("source", ""), raw.get("category")),
                    category=raw.get("category"),
                )
            )
    return records


def _digest(paths: list[Path], root: Path) -> str:
    sha = hashlib.sha256()
    for path in paths:
        if path != root:
            sha.update(path.relative_to(root).as_posix().encode() + b"\0")
        sha.update(path.read_bytes())
    return sha.hexdigest()


def load_file(name: str, path: str | None, fallback: Callable[[], list[Record]]) -> tuple[list[Record], CorpusInfo]:
    resolved = _resolve(path)
    if resolved is None or not resolved.is_file():
        generated = fallback()
        return generated, CorpusInfo(name, path, None, len(generated), builtin=True)
    records = _read_jsonl(resolved, name)
    return records, CorpusInfo(name, path, _digest([resolved], resolved), len(records), builtin=False)


def load_templates(path: str | None) -> tuple[list[Record], CorpusInfo]:
    """The templates directory: `*.jsonl` files of filled templates, `*.txt` meta-prompts sent verbatim.
    Without it there are no corpus templates (the built-in campaign templates remain)."""
    resolved = _resolve(path)
    if resolved is None or not resolved.is_dir():
        return [], CorpusInfo("templates", path, None, 0, builtin=True)
    files = sorted(p for p in resolved.iterdir() if p.suffix in (".jsonl", ".txt"))
    records: list[Record] = []
    for file in files:
        if file.suffix == ".jsonl":
            records += _read_jsonl(file, "templates")
        else:
            text = file.read_text(encoding="utf-8")
            records.append(Record(id=file.stem, corpus="templates", turns=(text,), category=file.stem))
    return records, CorpusInfo("templates", path, _digest(files, resolved), len(records), builtin=False)


@dataclass(frozen=True)
class Texts:
    legit: list[Record]
    extraction: list[Record]
    templates: list[Record]
    info: dict[str, CorpusInfo]


def load(corpora: Corpora, seed: int) -> Texts:
    legit, legit_info = load_file("legit", corpora.legit, lambda: builtin.legit_records(BUILTIN_LEGIT_RECORDS, seed))
    extraction, extraction_info = load_file(
        "extraction", corpora.extraction, lambda: builtin.extraction_records(BUILTIN_EXTRACTION_RECORDS, seed)
    )
    templates, templates_info = load_templates(corpora.templates)
    return Texts(
        legit=legit,
        extraction=extraction,
        templates=templates,
        info={"legit": legit_info, "extraction": extraction_info, "templates": templates_info},
    )
