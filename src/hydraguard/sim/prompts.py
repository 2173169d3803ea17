"""The prompt book: every distinct request body (its messages) that the simulated clients can send.

Prompts are addressed by an integer index into one virtual index space made of catalogs (legitimate
conversations, benchmark sets, labelling templates, each campaign's task list). Nothing is rendered up front:
`ensure` renders a prompt the first time an event uses it, runs the gateway's own `describe_chat` on the
body and keeps the statistics, so the cost is one description per *distinct* prompt, mapped onto events with
array indexing. A prompt's `prompt_ref` is a hash of its messages: it refers to the text (re-rendered from
the corpora by `messages`) without revealing where it came from.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import ClassVar, Protocol

import msgspec
import numpy as np
import pyarrow as pa

from hydraguard.detect.request import RequestFeatures, request_features
from hydraguard.gateway.requests import describe_chat
from hydraguard.sim import builtin, elicitation
from hydraguard.sim.bodies import Messages, Profile, chat_body
from hydraguard.sim.corpora import Texts
from hydraguard.sim.records import Record
from hydraguard.sim.scenario import CampaignPrompts

KINDS = ("conversation", "eval_set", "labelling", "template", "corpus_template", "cot", "rubric")
ORDINARY_KINDS = frozenset(("conversation", "eval_set", "labelling"))  # what legitimate users send
AREAS = ("coding", "agentic", "reasoning", "general")
MAX_REPLY_CHARS = 4_000  # earlier assistant replies a client sends back in a conversation's history
_DESCRIBE_PROFILE = Profile(model="sim")


@dataclass(frozen=True)
class Rendered:
    messages: Messages
    origin: str  # the corpus records (or built-in texts) it was made from
    template: str | None = None
    technique: int | None = None


class Catalog(Protocol):
    kind: np.ndarray  # per prompt: index into KINDS
    area: np.ndarray  # per prompt: index into AREAS
    answer_tokens: np.ndarray  # per prompt: length of the model's answer to it

    def render(self, index: int) -> Rendered: ...


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def _seed(*parts: object) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


def _reply(tokens: int, *key: object) -> dict[str, str]:
    return {"role": "assistant", "content": builtin.filler(min(int(tokens) * 4, MAX_REPLY_CHARS), _seed(*key))}


def _areas(records: list[Record]) -> np.ndarray:
    return np.array([AREAS.index(r.area) for r in records], dtype=np.int8)


def _tokens(rng: np.random.Generator, median: float, sigma: float, size: int) -> np.ndarray:
    return np.maximum(1, np.rint(median * np.exp(sigma * rng.standard_normal(size)))).astype(np.int64)


class Conversations:
    """Legitimate multi-turn conversations: prompt `v * prefixes + p` is prefix `p` (a record's first turns,
    with the assistant's replies in between) sent by an app with system prompt `v` (0: none)."""

    def __init__(self, records: list[Record], seed: int) -> None:
        self.records = records
        turns = np.array([len(r.turns) for r in records], dtype=np.int64)
        self.first = np.cumsum(turns) - turns  # prefix index of each record's first turn
        self.turns = turns
        self.prefix_record = np.repeat(np.arange(len(records)), turns)
        self.prefix_turn = np.arange(int(turns.sum())) - np.repeat(self.first, turns)
        self.prefixes = int(turns.sum())
        variants = 1 + len(builtin.APP_SYSTEM_PROMPTS)
        rng = np.random.default_rng([seed, 6])
        self.answer_tokens = np.tile(_tokens(rng, 350, 0.8, self.prefixes), variants)
        self.area = np.tile(_areas(records)[self.prefix_record], variants)
        self.kind = np.full(self.prefixes * variants, KINDS.index("conversation"), dtype=np.int8)

    def render(self, index: int) -> Rendered:
        variant, prefix = divmod(index, self.prefixes)
        r, turn = int(self.prefix_record[prefix]), int(self.prefix_turn[prefix])
        record = self.records[r]
        system = builtin.APP_SYSTEM_PROMPTS[variant - 1] if variant else record.system
        messages = [] if system is None else [{"role": "system", "content": system}]
        for j in range(turn):
            messages += [_user(record.turns[j]), _reply(self.answer_tokens[self.first[r] + j], record.id, j)]
        messages.append(_user(record.turns[turn]))
        suffix = f"+app-system-{variant}" if variant else ""
        return Rendered(messages, f"{record.corpus}:{record.id}#turn{turn}{suffix}")


class EvalSet:
    """A fixed benchmark set: the first turns of `size` legitimate records, sent again and again."""

    def __init__(self, records: list[Record], size: int, seed: int) -> None:
        rng = np.random.default_rng([seed, 7])
        picked = rng.permutation(len(records))[:size]
        self.records = [records[i] for i in picked]
        self.answer_tokens = _tokens(rng, 450, 0.7, len(self.records))
        self.area = _areas(self.records)
        self.kind = np.full(len(self.records), KINDS.index("eval_set"), dtype=np.int8)

    def render(self, index: int) -> Rendered:
        record = self.records[index]
        return Rendered([_user(record.turns[0])], f"{record.corpus}:{record.id}#turn0")


class Labelling:
    """Data-labelling pipelines: prompt `t * len(records) + r` is labelling template `t` filled with record `r`."""

    def __init__(self, records: list[Record], templates: int, seed: int) -> None:
        self.records = records
        self.templates = min(templates, len(builtin.LABELLING_TEMPLATES))
        size = self.templates * len(records)
        self.answer_tokens = _tokens(np.random.default_rng([seed, 8]), 6, 0.5, size)
        self.area = np.full(size, AREAS.index("general"), dtype=np.int8)
        self.kind = np.full(size, KINDS.index("labelling"), dtype=np.int8)

    def render(self, index: int) -> Rendered:
        template, r = divmod(index, len(self.records))
        record = self.records[r]
        text = builtin.LABELLING_TEMPLATES[template].format(text=record.turns[0])
        return Rendered([_user(text)], f"{record.corpus}:{record.id}#turn0", template=f"labelling-{template}")


class CampaignTasks:
    """A campaign's task list: `distinct` prompts, each a built-in template filled with an extraction task, a
    corpus template, a task wrapped in a chain-of-thought technique, or a rubric-grading request."""

    _ANSWERS: ClassVar[dict[str, tuple[float, float]]] = {
        "template": (600, 0.6),
        "corpus_template": (90, 1.0),
        "cot": (1100, 0.5),
        "rubric": (120, 0.5),
    }

    def __init__(self, config: CampaignPrompts, texts: Texts, seed: int, techniques: np.ndarray) -> None:
        rng = np.random.default_rng([seed, 9])
        n = config.distinct
        self.tasks = texts.extraction
        self.corpus_templates = texts.templates if config.corpus_templates else []
        self.systems = [r.system for r in texts.extraction if r.system is not None] or list(
            elicitation.EXPLANATION_SYSTEM_PROMPTS
        )
        roll = rng.random(n)
        kind = np.where(
            roll < config.cot_share,
            "cot",
            np.where(roll < config.cot_share + config.rubric_share, "rubric", "template"),
        ).astype(object)
        if self.corpus_templates:
            kind[(kind == "template") & (rng.random(n) < 0.25)] = "corpus_template"
        self.kind = np.array([KINDS.index(k) for k in kind], dtype=np.int8)
        focus = np.array([config.focus.get(a, 0.0) for a in AREAS])
        self.area = rng.choice(len(AREAS), size=n, p=focus / focus.sum()).astype(np.int8)
        self.task = self._tasks_for(rng, self.area)
        in_use = [elicitation.TEMPLATES[i] for i in rng.permutation(len(elicitation.TEMPLATES))[: config.templates]]
        self.templates = [self._template_for(rng, in_use, AREAS[a]) for a in self.area]
        self.wording = np.array(
            [t.wording(int(p)) for t, p in zip(self.templates, rng.integers(config.paraphrases, size=n), strict=True)]
        )
        self.corpus_template = rng.integers(max(1, len(self.corpus_templates)), size=n)
        self.system = np.where(rng.random(n) < config.system_prompts, rng.integers(len(self.systems), size=n), -1)
        self.technique = techniques[np.arange(n) % config.techniques]
        self.rubric = rng.integers(elicitation.RUBRIC_SPACE, size=n)
        self.answer_tokens = np.empty(n, dtype=np.int64)
        for name, (median, sigma) in self._ANSWERS.items():
            mask = self.kind == KINDS.index(name)
            self.answer_tokens[mask] = _tokens(rng, median, sigma, int(mask.sum()))
        agentic = (self.area == AREAS.index("agentic")) & (self.kind == KINDS.index("template"))
        self.answer_tokens[agentic] = _tokens(rng, 250, 0.5, int(agentic.sum()))

    def _tasks_for(self, rng: np.random.Generator, area: np.ndarray) -> np.ndarray:
        """An extraction task per prompt, from the records of its area (agents get coding tasks)."""
        by_area = np.array([AREAS.index(r.area) for r in self.tasks])
        wanted = np.where(area == AREAS.index("agentic"), AREAS.index("coding"), area)
        out = rng.integers(len(self.tasks), size=len(area))
        for a in np.unique(wanted):
            pool = np.flatnonzero(by_area == a)
            if len(pool):
                mask = wanted == a
                out[mask] = pool[rng.integers(len(pool), size=int(mask.sum()))]
        return out

    @staticmethod
    def _template_for(rng: np.random.Generator, in_use: list[elicitation.Template], area: str) -> elicitation.Template:
        matching = [t for t in in_use if t.area == area] or in_use
        return matching[int(rng.integers(len(matching)))]

    def render(self, index: int) -> Rendered:
        kind = KINDS[self.kind[index]]
        record = self.tasks[self.task[index]]
        task = record.turns[0]
        origin = f"{record.corpus}:{record.id}"
        messages: Messages = []
        if kind == "corpus_template":
            filled = self.corpus_templates[self.corpus_template[index]]
            if filled.system is not None:
                messages.append({"role": "system", "content": filled.system})
            return Rendered(
                [*messages, _user(filled.turns[0])], f"{filled.corpus}:{filled.id}", template=filled.category
            )
        if kind == "cot":
            text, position = elicitation.technique(int(self.technique[index]))
            if position == "follow_up":
                messages = [_user(task), _reply(self.answer_tokens[index], "cot", index), _user(text)]
            else:
                messages = [_user(f"{text}\n\n{task}" if position == "before" else f"{task}\n\n{text}")]
            return Rendered(messages, origin, technique=int(self.technique[index]))
        if kind == "rubric":
            candidate = builtin.filler(1_200, _seed("rubric", index))
            return Rendered([_user(elicitation.rubric(int(self.rubric[index]), task, candidate))], origin)
        template = self.templates[index]
        system = template.system or (self.systems[self.system[index]] if self.system[index] >= 0 else None)
        if system is not None:
            messages.append({"role": "system", "content": system})
        messages.append(_user(template.render(int(self.wording[index]), task)))
        return Rendered(messages, origin, template=f"{template.id}/{self.wording[index]}")


def features_of(messages: Messages) -> RequestFeatures:
    """The detection layer's request features, from the system prompt and the last user turn, as the gateway
    computes them (tools are added per event: a request with tools is agentic)."""
    system = "\n".join(m["content"] for m in messages if m["role"] in ("system", "developer"))
    last_user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    return request_features(system, last_user)


class PromptBook:
    def __init__(self, materialize: bool = False) -> None:
        self.catalogs: list[Catalog] = []
        self.offsets: list[int] = []
        self.size = 0
        self.materialize = materialize
        self.kind = np.empty(0, dtype=np.int8)
        self.area = np.empty(0, dtype=np.int8)
        self.answer_tokens = np.empty(0, dtype=np.int64)
        self.message_count = np.empty(0, dtype=np.int64)
        self.prompt_chars = np.empty(0, dtype=np.int64)
        self.tokens_est = np.empty(0, dtype=np.int64)
        self.uses = np.empty(0, dtype=np.int64)
        self.refs: dict[int, str] = {}
        self.system_hash: dict[int, str] = {}
        self.texts: dict[int, str] = {}
        self.meta: dict[int, Rendered] = {}
        self.features: dict[int, RequestFeatures] = {}

    def add(self, catalog: Catalog) -> int:
        """Add a catalog; its prompt `i` is the book's prompt `offset + i`."""
        offset, n = self.size, len(catalog.kind)
        self.catalogs.append(catalog)
        self.offsets.append(offset)
        self.size += n
        self.kind = np.r_[self.kind, catalog.kind]
        self.area = np.r_[self.area, catalog.area]
        self.answer_tokens = np.r_[self.answer_tokens, catalog.answer_tokens]
        for name in ("message_count", "prompt_chars", "tokens_est"):
            setattr(self, name, np.r_[getattr(self, name), np.full(n, -1, dtype=np.int64)])
        self.uses = np.r_[self.uses, np.zeros(n, dtype=np.int64)]
        return offset

    def render(self, index: int) -> Rendered:
        c = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.catalogs[c].render(index - self.offsets[c])

    def messages(self, index: int) -> Messages:
        return self.render(index).messages

    def ensure(self, indices: np.ndarray) -> np.ndarray:
        """Describe every prompt in `indices` not yet described; returns the distinct indices."""
        unique = np.unique(indices)
        missing = unique[self.message_count[unique] < 0]
        catalog = np.searchsorted(self.offsets, missing, side="right") - 1
        for index, c in zip(missing.tolist(), catalog.tolist(), strict=True):
            rendered = self.catalogs[c].render(index - self.offsets[c])
            info = describe_chat(chat_body(rendered.messages, _DESCRIBE_PROFILE), 1)
            self.message_count[index] = info.message_count
            self.prompt_chars[index] = info.prompt_chars
            self.tokens_est[index] = info.prompt_tokens_est
            if info.system_prompt_hash is not None:
                self.system_hash[index] = info.system_prompt_hash
            self.refs[index] = "p_" + hashlib.sha256(msgspec.json.encode(rendered.messages)).hexdigest()[:24]
            self.meta[index] = Rendered([], rendered.origin, rendered.template, rendered.technique)
            self.features[index] = features_of(rendered.messages)
            if self.materialize:
                self.texts[index] = info.prompt_text
        return unique

    def table(self) -> pa.Table:
        """Every prompt used, once per distinct `prompt_ref`: where it came from and what it is (ground truth
        for evaluation; never given to a detector as an event field)."""
        used = sorted(self.refs)
        seen: set[str] = set()
        rows = []
        for i in used:
            ref = self.refs[i]
            if ref in seen:
                continue
            seen.add(ref)
            rows.append(i)
        idx = np.array(rows, dtype=np.int64)
        uses: dict[str, int] = {}
        for i in used:
            uses[self.refs[i]] = uses.get(self.refs[i], 0) + int(self.uses[i])
        return pa.table(
            {
                "prompt_ref": pa.array([self.refs[i] for i in rows], pa.string()),
                "kind": pa.array([KINDS[k] for k in self.kind[idx]], pa.string()),
                "ordinary": pa.array([KINDS[k] in ORDINARY_KINDS for k in self.kind[idx]], pa.bool_()),
                "area": pa.array([AREAS[a] for a in self.area[idx]], pa.string()),
                "origin": pa.array([self.meta[i].origin for i in rows], pa.string()),
                "template": pa.array([self.meta[i].template for i in rows], pa.string()),
                "technique": pa.array([self.meta[i].technique for i in rows], pa.int64()),
                "message_count": pa.array(self.message_count[idx]),
                "prompt_chars": pa.array(self.prompt_chars[idx]),
                "prompt_tokens_est": pa.array(self.tokens_est[idx]),
                "system_prompt_hash": pa.array([self.system_hash.get(i) for i in rows], pa.string()),
                "answer_tokens": pa.array(self.answer_tokens[idx]),
                "requests": pa.array([uses[self.refs[i]] for i in rows], pa.int64()),
            }
        )
