"""Detection rules: reviewed YAML files that say which features indicate extraction (docs/rules.md).

A rule is data, not code, in the spirit of Sigma rules and CrowdSec scenarios: a condition over one level's
features (a request's, an account's, or a cluster of linked accounts'), and the action to propose when it
holds. Conditions are parsed once, at load time, into predicates; nothing is ever evaluated as code. Every load
error is a `RuleError` naming the file and the field, so a rule pack is either entirely valid or not loaded at all.
"""

from __future__ import annotations

import enum
import hashlib
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hydraguard.decide.model import ScopeKind
from hydraguard.yamlfile import parse_yaml

Scalar = float | int | str | bool
FeatureValue = Scalar | None
Features = Mapping[str, FeatureValue]
# one array per feature, a value per subject: float64 (NaN: absent) or, for text, object (None: absent)
Columns = Mapping[str, np.ndarray]

# the event fields a request rule may read (`request.<field>`): numbers, then text
REQUEST_NUMBERS = ("reasoning_extraction_score", "message_count", "prompt_tokens", "completion_tokens", "status")
REQUEST_TEXT = ("capability_area", "user_agent", "tier", "refusal_reason")
SUFFIXES = (".yaml", ".yml")
DEFAULT_DIR = Path(__file__).parent / "rules"


class RuleError(Exception):
    """A rule file that cannot be loaded; the message names the file and every offending field."""


class Level(enum.StrEnum):
    REQUEST = "request"  # one request's fields, as its event records them
    ACCOUNT = "account"  # one account's features
    CLUSTER = "cluster"  # the features of a group of linked accounts


class Severity(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Action(enum.StrEnum):
    FLAG = "flag"  # for an analyst; enforces nothing
    THROTTLE = "throttle"
    DEGRADE = "degrade"
    CHALLENGE = "challenge"
    BLOCK = "block"


# -- durations -------------------------------------------------------------------------------------------
_DURATION = re.compile(r"([1-9][0-9]*)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> int:
    """Seconds in a duration string: `90s`, `30m`, `6h`, `7d`."""
    if isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        return int(match[1]) * _UNIT_SECONDS[match[2]]
    raise ValueError(f"{value!r} is not a duration like 30m, 6h or 7d (a positive whole number, then s, m, h or d)")


# -- conditions ------------------------------------------------------------------------------------------
_LEAF = re.compile(
    r"(?P<feature>[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+)\s*"
    r"(?P<op>>=|<=|==|!=|>|<|\bnot\s+in\b|\bin\b)\s*"
    r"(?P<literal>.*)"
)
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_INTEGER = re.compile(r"[-+]?\d+")
_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:/-]*")
_QUOTED = re.compile(r'"([^"]*)"|\'([^\']*)\'')
_ITEM = r'"[^"]*"|\'[^\']*\'|[^\s,\[\]"\']+'
_LIST = re.compile(rf"\[\s*(?:(?:{_ITEM})\s*(?:,\s*(?:{_ITEM})\s*)*)?\]")


def _in(value: Scalar, values: tuple[Scalar, ...]) -> bool:
    return value in values


def _not_in(value: Scalar, values: tuple[Scalar, ...]) -> bool:
    return value not in values


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
    "in": _in,
    "not in": _not_in,
}
_ORDERING = frozenset({">=", ">", "<=", "<"})


def _kind(value: object) -> str | None:
    """The literal kind a value compares as; None for an absent, NaN or unsupported value."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    # the concrete types first: the `Real` check (numpy scalars) is an ABC's, many times slower
    if isinstance(value, float | int | Real):
        return None if value != value else "number"  # NaN: as if absent
    return None


def _render(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.0f}"
    if isinstance(value, str) and not _BARE.fullmatch(value):
        return f'"{value}"'
    return str(value)


def _scalar(text: str) -> tuple[Scalar, str]:
    """A literal's value and kind."""
    if quoted := _QUOTED.fullmatch(text):
        return (quoted[1] if quoted[1] is not None else quoted[2]), "string"
    if text in ("true", "false"):
        return text == "true", "bool"
    if _NUMBER.fullmatch(text):
        return (int(text) if _INTEGER.fullmatch(text) else float(text)), "number"
    if text in ("null", "~"):
        raise ValueError("null is not a literal (an absent feature never matches)")
    if _BARE.fullmatch(text):
        return text, "string"
    raise ValueError(f"{text!r} is not a number, true, false, a bare word or a quoted string")


@dataclass(frozen=True, slots=True)
class Leaf:
    """`<feature> <op> <literal>`: holds when the feature is present, of the literal's kind, and compares so."""

    text: str
    feature: str
    op: str
    literal: str  # as written, for explanations
    kind: str  # number, string or bool
    expected: Scalar | tuple[Scalar, ...]

    def holds(self, features: Features) -> bool:
        value = features.get(self.feature)
        return _kind(value) == self.kind and _OPS[self.op](value, self.expected)

    def holds_each(self, columns: Columns, rows: int) -> np.ndarray:
        values = columns.get(self.feature)
        if values is None or self.kind != ("string" if values.dtype == object else "number"):
            return np.zeros(rows, dtype=bool)  # numeric columns hold no strings or booleans, text no numbers
        if values.dtype == object:
            return self._holds_for_text(values)
        present = ~np.isnan(values)
        if self.op in ("in", "not in"):
            found = np.isin(values, np.array(self.expected, dtype=float))
            return present & (found if self.op == "in" else ~found)
        return present & _OPS[self.op](values, self.expected)

    def _holds_for_text(self, values: np.ndarray) -> np.ndarray:
        present = np.array([isinstance(v, str) for v in values], dtype=bool)
        if self.op in ("==", "!="):
            found = values == self.expected
        else:  # in, not in: ordering leaves take numbers only
            found = np.isin(np.where(present, values, ""), np.array(self.expected, dtype=object))
        return present & (found if self.op in ("==", "in") else ~found)

    def why(self, features: Features, outcome: bool) -> list[str]:
        value = features.get(self.feature)
        seen = "is absent" if value is None else f"= {_render(value)}"
        return [f"{self.feature} {seen} ({'' if outcome else 'not '}{self.op} {self.literal})"]

    def features(self) -> Iterator[str]:
        yield self.feature

    def source(self) -> object:
        return self.text


@dataclass(frozen=True, slots=True)
class AllOf:
    children: tuple[Condition, ...]

    def holds(self, features: Features) -> bool:
        return all(child.holds(features) for child in self.children)

    def holds_each(self, columns: Columns, rows: int) -> np.ndarray:
        return np.logical_and.reduce([child.holds_each(columns, rows) for child in self.children])

    def why(self, features: Features, outcome: bool) -> list[str]:
        parts = self.children if outcome else [c for c in self.children if not c.holds(features)]
        return [reason for child in parts for reason in child.why(features, outcome)]

    def features(self) -> Iterator[str]:
        for child in self.children:
            yield from child.features()

    def source(self) -> object:
        return {"all": [child.source() for child in self.children]}


@dataclass(frozen=True, slots=True)
class AnyOf:
    children: tuple[Condition, ...]

    def holds(self, features: Features) -> bool:
        return any(child.holds(features) for child in self.children)

    def holds_each(self, columns: Columns, rows: int) -> np.ndarray:
        return np.logical_or.reduce([child.holds_each(columns, rows) for child in self.children])

    def why(self, features: Features, outcome: bool) -> list[str]:
        parts = [c for c in self.children if c.holds(features)] if outcome else self.children
        return [reason for child in parts for reason in child.why(features, outcome)]

    def features(self) -> Iterator[str]:
        for child in self.children:
            yield from child.features()

    def source(self) -> object:
        return {"any": [child.source() for child in self.children]}


@dataclass(frozen=True, slots=True)
class Not:
    child: Condition

    def holds(self, features: Features) -> bool:
        return not self.child.holds(features)

    def holds_each(self, columns: Columns, rows: int) -> np.ndarray:
        return ~self.child.holds_each(columns, rows)

    def why(self, features: Features, outcome: bool) -> list[str]:
        return self.child.why(features, not outcome)

    def features(self) -> Iterator[str]:
        return self.child.features()

    def source(self) -> object:
        return {"not": self.child.source()}


# Every node: `holds(features)`; `holds_each(columns, rows)`, the same for many subjects at once (numeric columns,
# NaN for absent); `why(features, outcome)`, the leaves that make it evaluate to `outcome` (which
# it does), rendered; `features()`, the names it reads; `source()`, its YAML form.
Condition = Leaf | AllOf | AnyOf | Not


def parse_leaf(text: str, where: str = "when") -> Leaf:
    """One `<feature> <op> <literal>` string, compiled; a ValueError quoting the leaf if it is malformed."""

    def malformed(why: str) -> ValueError:
        return ValueError(f"{where}: malformed condition {text!r}: {why}")

    match = _LEAF.fullmatch(text.strip())
    if not match or not match["literal"].strip():
        raise malformed("expected `<feature> <op> <literal>`, e.g. `account.reasoning_share >= 0.3`")
    feature, op, literal = match["feature"], " ".join(match["op"].split()), match["literal"].strip()
    expected: Scalar | tuple[Scalar, ...]
    try:
        if op in ("in", "not in"):
            if not _LIST.fullmatch(literal):
                raise ValueError(f"`{op}` needs a list like [coding, math], got {literal!r}")
            items = [_scalar(item) for item in re.findall(_ITEM, literal[1:-1])]
            kinds = {kind for _, kind in items}
            if len(kinds) != 1:
                raise ValueError(f"`{op}` needs a non-empty list of one kind (numbers, strings or true/false)")
            expected, kind = tuple(value for value, _ in items), kinds.pop()
        else:
            expected, kind = _scalar(literal)
            if op in _ORDERING and kind != "number":
                raise ValueError(f"`{op}` needs a number, got {literal!r}")
    except ValueError as exc:
        raise malformed(str(exc)) from exc
    return Leaf(text=text, feature=feature, op=op, literal=literal, kind=kind, expected=expected)


def compile_condition(raw: object, where: str = "when") -> Condition:
    """A condition tree from its YAML form: a leaf string, or `{all: [...]}`, `{any: [...]}`, `{not: ...}`."""
    if isinstance(raw, str):
        return parse_leaf(raw, where)
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ValueError(f"{where}: a condition is a leaf string or a mapping with one key: all, any or not")
    ((key, value),) = raw.items()
    if key in ("all", "any"):
        if not isinstance(value, list) or not value:
            raise ValueError(f"{where}.{key}: needs a non-empty list of conditions")
        children = tuple(compile_condition(child, f"{where}.{key}[{i}]") for i, child in enumerate(value))
        return AllOf(children) if key == "all" else AnyOf(children)
    if key == "not":
        return Not(compile_condition(value, f"{where}.not"))
    raise ValueError(f"{where}: unknown key {key!r}; a condition mapping has one key: all, any or not")


def _compile_when(raw: object) -> Condition:
    if not isinstance(raw, dict):
        raise ValueError("`when` is a mapping with one key: all, any or not")
    return compile_condition(raw)


def _compile_members(raw: object) -> Condition | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError("`members` is a mapping with one key: all, any or not")
    condition = compile_condition(raw, "members")
    foreign = sorted({f for f in condition.features() if not f.startswith("account.")})
    if foreign:
        raise ValueError(f"`members` judges each member account: only `account.` features, not {', '.join(foreign)}")
    return condition


# -- rules -----------------------------------------------------------------------------------------------
Text = Annotated[str, Field(min_length=1)]
_DEFAULT_SCOPE = {Level.REQUEST: ScopeKind.KEY, Level.ACCOUNT: ScopeKind.ACCOUNT, Level.CLUSTER: ScopeKind.GROUP}
# what a detection of each level can name: the key, account or address that sent a request, an account, or a
# cluster's members one by one or as one group
_SCOPES = {
    Level.REQUEST: (ScopeKind.KEY, ScopeKind.ACCOUNT, ScopeKind.IP),
    Level.ACCOUNT: (ScopeKind.ACCOUNT,),
    Level.CLUSTER: (ScopeKind.GROUP, ScopeKind.ACCOUNT),
}


class Rule(BaseModel):
    """One detection rule, validated, with its condition compiled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$")]
    version: Annotated[int, Field(ge=1, strict=True)]
    title: Text
    description: Text
    rationale: Text  # why it indicates extraction
    source: Text  # the public report or reference it is drawn from
    level: Level
    severity: Severity
    action: Action
    scope: ScopeKind  # defaults by level, see _default_scope
    ttl: Annotated[int | None, BeforeValidator(lambda v: None if v is None else parse_duration(v))] = None  # seconds
    shadow: Annotated[bool, Field(strict=True)] = False  # log hits, act on none
    tags: list[str] = []
    when: Annotated[Condition, PlainValidator(_compile_when), PlainSerializer(lambda when: when.source())]
    # cluster rules: the condition each member's own features must meet for the action to cover it
    members: Annotated[
        Condition | None,
        PlainValidator(_compile_members),
        PlainSerializer(lambda members: members.source() if members is not None else None),
    ] = None

    @model_validator(mode="before")
    @classmethod
    def _default_scope(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "scope" in data:
            return data
        level = data.get("level")
        valid = isinstance(level, str) and level in _DEFAULT_SCOPE
        # with an invalid level the rule fails on `level` alone, so any scope does here
        return {**data, "scope": _DEFAULT_SCOPE[level] if valid else ScopeKind.ACCOUNT}

    @field_validator("when")
    @classmethod
    def _level_prefix(cls, when: Condition, info: ValidationInfo) -> Condition:
        level = info.data.get("level")
        if level is not None:
            foreign = sorted({f for f in when.features() if not f.startswith(f"{level}.")})
            if foreign:
                raise ValueError(f"a {level} rule may use only `{level}.` features, not {', '.join(foreign)}")
            fields = {f"request.{name}" for name in (*REQUEST_NUMBERS, *REQUEST_TEXT)}
            unknown = sorted(set(when.features()) - fields) if level == Level.REQUEST else []
            if unknown:
                raise ValueError(f"a request rule reads {', '.join(sorted(fields))}; not {', '.join(unknown)}")
        return when

    @model_validator(mode="after")
    def _members_only_for_clusters(self) -> Rule:
        if self.members is not None and self.level is not Level.CLUSTER:
            raise ValueError("members: only cluster rules judge their members")
        return self

    @model_validator(mode="after")
    def _scope_of_level(self) -> Rule:
        allowed = _SCOPES[self.level]
        if self.scope not in allowed:
            names = " or ".join(str(s) for s in allowed)
            raise ValueError(f"scope: a {self.level} rule acts on {names}, not {self.scope}")
        return self

    @model_validator(mode="after")
    def _ttl_unless_flag(self) -> Rule:
        if self.ttl is None and self.action is not Action.FLAG:
            raise ValueError(f"ttl: required for action {self.action} (only flag rules may omit it)")
        return self

    def matches(self, features: Features) -> bool:
        return self.when.holds(features)

    def explain(self, features: Features) -> list[str]:
        """The leaf conditions that made the rule fire, with the values seen; empty when it does not fire."""
        return self.when.why(features, True) if self.when.holds(features) else []


def parse_rule(text: str, source: str = "<rule>") -> Rule:
    return parse_yaml(text, Rule, source, RuleError, "a rule")


# -- rule sets -------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Hit:
    """A rule that fired, with what it proposes and why."""

    rule_id: str
    version: int
    severity: Severity
    action: Action
    scope: ScopeKind
    ttl: int | None  # seconds; None only for a flag without one
    shadow: bool  # log it, act on nothing
    reasons: tuple[str, ...]
    members: Condition | None = None  # cluster rules: what a member's own features must show to be covered


def _rule_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise RuleError(f"rule path {path} does not exist")
    found = (p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
    return sorted(p for p in found if not any(part.startswith(".") for part in p.relative_to(path).parts))


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...]

    @classmethod
    def load(cls, paths: Iterable[Path]) -> RuleSet:
        """Rule files, and every `*.yaml`/`*.yml` under directories (sorted, dot-files skipped), in that order."""
        origin: dict[str, Path] = {}
        rules: list[Rule] = []
        for path in paths:
            for file in _rule_files(Path(path)):
                rule = parse_rule(file.read_text(encoding="utf-8"), str(file))
                if rule.id in origin:
                    raise RuleError(f"{file}: rule id {rule.id!r} is already defined in {origin[rule.id]}")
                origin[rule.id] = file
                rules.append(rule)
        return cls(tuple(rules))

    @classmethod
    def default(cls) -> RuleSet:
        """The rule pack shipped in the package (`hydraguard/detect/rules/`)."""
        return cls.load([DEFAULT_DIR])

    def fire(self, level: str, columns: Columns, rows: int) -> Firing:
        """Which of this level's rules fire on each of many subjects given as numeric feature columns. The
        conditions run on whole columns; `Firing.explain` explains the subjects one at a time."""
        wanted = Level(level)
        chosen = tuple(rule for rule in self.rules if rule.level is wanted)
        return Firing(chosen, tuple(rule.when.holds_each(columns, rows) for rule in chosen), columns, rows)

    def evaluate_each(
        self, level: str, columns: Columns, rows: int
    ) -> Iterator[tuple[int, dict[str, FeatureValue], list[Hit]]]:
        """`evaluate` for many subjects given as numeric feature columns: (row, its features, its hits) for each
        subject some rule fires on, in row order."""
        firing = self.fire(level, columns, rows)
        return firing.explain(np.flatnonzero(firing.fired()))

    def evaluate(self, level: str, features: Features) -> list[Hit]:
        """The hits of this level's rules on one subject's features, in load order."""
        wanted = Level(level)
        return [
            _hit(rule, rule.explain(features)) for rule in self.rules if rule.level is wanted and rule.matches(features)
        ]


@dataclass(frozen=True, slots=True)
class Firing:
    """Which rules fire on each of many subjects: one boolean column per rule, over the subjects' rows."""

    rules: tuple[Rule, ...]
    masks: tuple[np.ndarray, ...]
    columns: Columns
    rows: int

    def fired(self) -> np.ndarray:
        """Per row: some rule fires."""
        return np.logical_or.reduce(self.masks) if self.masks else np.zeros(self.rows, dtype=bool)

    def fingerprint(self) -> np.ndarray:
        """Per row: a 64-bit digest of which rules (id and version) fire, 0 when none does; equal digests, equal
        rule sets (up to a 2**-64 chance), whatever the rules' load order."""
        digest = np.zeros(self.rows, dtype=np.uint64)
        for rule, mask in zip(self.rules, self.masks, strict=True):
            digest ^= np.where(mask, _rule_key(rule), np.uint64(0))
        return digest

    def shortest_ttl(self) -> np.ndarray:
        """Per row: the shortest TTL (seconds) of the rules that fire; infinity when none has one."""
        shortest = np.full(self.rows, np.inf)
        for rule, mask in zip(self.rules, self.masks, strict=True):
            if rule.ttl is not None:
                shortest[mask] = np.minimum(shortest[mask], rule.ttl)
        return shortest

    def explain(self, rows: Iterable[int]) -> Iterator[tuple[int, dict[str, FeatureValue], list[Hit]]]:
        """(row, its features, its hits) for each of `rows` (rows no rule fires on give no hits)."""
        names = list(self.columns)
        rows = np.asarray(rows, dtype=np.int64)
        # each column's values at these rows in one call per column: a dict per row from numpy scalars was most of
        # the time an hourly analysis spent explaining accounts
        taken = [_values(self.columns[name][rows]) for name in names]
        per_row = zip(*taken, strict=True) if taken else [()] * len(rows)
        for row, values in zip(rows.tolist(), per_row, strict=True):
            features = dict(zip(names, values, strict=True))
            hits = [fired_hit(rule, features) for rule, mask in zip(self.rules, self.masks, strict=True) if mask[row]]
            yield row, features, hits


def fired_hit(rule: Rule, features: Features) -> Hit:
    """The hit of a rule on features it is known to fire on (its column said so), explained by them."""
    return _hit(rule, rule.when.why(features, True))


def feature_value(column: np.ndarray, row: int) -> FeatureValue:
    return column[row] if column.dtype == object else float(column[row])


def _values(column: np.ndarray) -> list[FeatureValue]:
    """`feature_value` of each of the column's rows."""
    return list(column) if column.dtype == object else column.astype(float).tolist()


def _rule_key(rule: Rule) -> np.uint64:
    digest = hashlib.blake2b(f"{rule.id}@{rule.version}".encode(), digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "little") | 1)  # never 0: 0 means no rule


def _hit(rule: Rule, reasons: list[str]) -> Hit:
    return Hit(
        rule_id=rule.id,
        version=rule.version,
        severity=rule.severity,
        action=rule.action,
        scope=rule.scope,
        ttl=rule.ttl,
        shadow=rule.shadow,
        reasons=tuple(reasons),
        members=rule.members,
    )
