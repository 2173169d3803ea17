"""Detection rules: the condition language, explanations, validation of rule files, and rule sets."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hydraguard.decide.model import ScopeKind
from hydraguard.detect import rules as rules_module
from hydraguard.detect.rules import Action, Hit, Rule, RuleError, RuleSet, Severity, feature_value, parse_rule


def rule_data(**fields: Any) -> dict[str, Any]:
    """A valid account rule, with `fields` replacing or adding keys (None removes one)."""
    data: dict[str, Any] = {
        "id": "reasoning-heavy",
        "version": 1,
        "title": "Reasoning-heavy account",
        "description": "Most of the account's prompts ask for step-by-step reasoning.",
        "rationale": "Reasoning traces are what a distillation campaign most wants to copy.",
        "source": "https://example.org/report",
        "level": "account",
        "severity": "high",
        "action": "throttle",
        "ttl": "6h",
        "when": {"all": ["account.reasoning_share >= 0.3"]},
    }
    data.update(fields)
    return {key: value for key, value in data.items() if value is not None}


def make_rule(**fields: Any) -> Rule:
    return parse_rule(yaml.safe_dump(rule_data(**fields)), "test.yaml")


def write_rule(path: Path, **fields: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(rule_data(**fields)), encoding="utf-8")
    return path


def leaf(text: str) -> Rule:
    return make_rule(when={"all": [text]})


def load_error(**fields: Any) -> str:
    with pytest.raises(RuleError) as err:
        make_rule(**fields)
    return str(err.value)


# -- the condition language ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "value", "expected"),
    [
        ("account.n >= 3", 3, True),
        ("account.n >= 3", 2.99, False),
        ("account.n > 3", 3, False),
        ("account.n > 3", 3.5, True),
        ("account.n <= 0.5", 0.5, True),
        ("account.n <= 0.5", 0.51, False),
        ("account.n < -1", -2, True),
        ("account.n < -1", -1, False),
        ("account.n == 3", 3.0, True),
        ("account.n == 3", 4, False),
        ("account.n != 3", 4, True),
        ("account.n != 3", 3, False),
        ("account.n>=1e3", 1000, True),
        ("account.area in [coding, math]", "math", True),
        ("account.area in [coding, math]", "general", False),
        ("account.area not in [coding, math]", "general", True),
        ("account.area not in [coding, math]", "coding", False),
        ("account.n in [1, 2.5]", 2.5, True),
        ("account.n not in [1, 2.5]", 2, True),
    ],
)
def test_every_operator(text: str, value: float | str, expected: bool) -> None:
    assert leaf(text).matches({"account.n": value, "account.area": value}) is expected


@pytest.mark.parametrize(
    ("text", "value", "expected"),
    [
        ("account.verified == true", True, True),
        ("account.verified == true", False, False),
        ("account.verified != false", True, True),
        ("account.verified == true", 1, False),  # a number is not a bool
        ("account.n == 1", True, False),  # nor a bool a number
        ("account.tier == free", "free", True),
        ('account.tier == "two words"', "two words", True),
        ("account.tier == 'single quoted'", "single quoted", True),
        ('account.tier == "3"', "3", True),
        ('account.tier == "3"', 3, False),  # a quoted number is a string
        ("account.tier == true", "true", False),
        ('account.tier in ["a, b", c]', "a, b", True),
    ],
)
def test_bool_and_string_literals_compare_only_with_their_kind(text: str, value: object, expected: bool) -> None:
    assert leaf(text).matches({"account.verified": value, "account.n": value, "account.tier": value}) is expected


def test_all_any_and_not_nest() -> None:
    rule = make_rule(
        when={
            "all": [
                "account.requests >= 1000",
                {"any": ["account.reasoning_share > 0.5", "account.area in [coding, math]"]},
                {"not": {"any": ["account.verified == true", "account.age_days >= 90"]}},
            ]
        }
    )
    base = {"account.requests": 5000, "account.reasoning_share": 0.7, "account.verified": False, "account.age_days": 3}
    assert rule.matches(base)
    assert rule.matches({**base, "account.reasoning_share": 0.1, "account.area": "math"})
    assert not rule.matches({**base, "account.reasoning_share": 0.1, "account.area": "general"})
    assert not rule.matches({**base, "account.requests": 999})
    assert not rule.matches({**base, "account.verified": True})
    assert not rule.matches({**base, "account.age_days": 400})


@pytest.mark.parametrize(
    "text",
    ["account.n >= 1", "account.n != 1", "account.n == 1", "account.n in [1, 2]", "account.n not in [1, 2]"],
)
@pytest.mark.parametrize("features", [{}, {"account.n": None}, {"account.n": float("nan")}, {"account.n": [1]}])
def test_an_absent_null_nan_or_unsupported_feature_never_matches(text: str, features: dict[str, Any]) -> None:
    rule = leaf(text)
    assert not rule.matches(features)
    assert rule.explain(features) == []


def test_not_of_an_absent_feature_holds() -> None:
    rule = make_rule(when={"not": "account.verified == true"})
    assert rule.matches({})
    assert rule.explain({}) == ["account.verified is absent (not == true)"]


def test_explain_renders_the_leaves_that_held_with_their_values() -> None:
    rule = make_rule(
        when={
            "all": [
                "account.reasoning_share >= 0.3",
                {"any": ["account.area in [coding, math]", "account.requests > 100000"]},
                {"not": "account.verified == true"},
                'account.label == "two words"',
            ]
        }
    )
    features = {
        "account.reasoning_share": 0.62,
        "account.area": "coding",
        "account.requests": 12,
        "account.verified": False,
        "account.label": "two words",
    }
    assert rule.explain(features) == [
        "account.reasoning_share = 0.62 (>= 0.3)",
        "account.area = coding (in [coding, math])",
        "account.verified = false (not == true)",
        'account.label = "two words" (== "two words")',
    ]
    assert rule.explain({**features, "account.reasoning_share": 0.1}) == []


def test_explain_of_a_negated_all_names_the_leaves_that_failed() -> None:
    rule = make_rule(when={"not": {"all": ["account.a > 1", "account.b > 1", "account.c > 1"]}})
    assert rule.explain({"account.a": 2, "account.b": 0.5}) == [
        "account.b = 0.5 (not > 1)",
        "account.c is absent (not > 1)",
    ]


# -- rule files ------------------------------------------------------------------------------------------
def test_a_rule_loads_with_its_defaults() -> None:
    rule = make_rule(tags=["reasoning", "cot"])
    assert (rule.id, rule.version, rule.severity, rule.action) == ("reasoning-heavy", 1, Severity.HIGH, Action.THROTTLE)
    assert (rule.scope, rule.ttl, rule.shadow, rule.tags) == (ScopeKind.ACCOUNT, 6 * 3600, False, ["reasoning", "cot"])
    cluster = make_rule(level="cluster", when={"all": ["cluster.accounts >= 10"]})
    assert cluster.scope is ScopeKind.GROUP
    assert make_rule(level="cluster", scope="account", when={"all": ["cluster.accounts >= 10"]}).scope is (
        ScopeKind.ACCOUNT
    )
    assert make_rule(action="flag", ttl=None).ttl is None


def test_model_dump_writes_the_condition_in_its_yaml_form() -> None:
    when = {"all": ["account.n >= 1", {"not": {"any": ["account.area in [a, b]"]}}]}
    assert make_rule(when=when).model_dump()["when"] == when


@pytest.mark.parametrize(("ttl", "seconds"), [("90s", 90), ("30m", 1800), ("6h", 21600), ("7d", 604800)])
def test_ttl_is_parsed_to_seconds(ttl: str, seconds: int) -> None:
    assert make_rule(ttl=ttl).ttl == seconds


@pytest.mark.parametrize("ttl", ["7x", "0h", "1.5h", "h", 3600])
def test_a_bad_ttl_is_rejected(ttl: object) -> None:
    message = load_error(ttl=ttl)
    assert "test.yaml" in message and "ttl:" in message and "not a duration" in message


@pytest.mark.parametrize(
    ("level", "scope"), [("account", "ip"), ("account", "group"), ("cluster", "key"), ("request", "group")]
)
def test_a_scope_the_level_cannot_name_is_rejected(level: str, scope: str) -> None:
    feature = "request.status" if level == "request" else f"{level}.n"
    message = load_error(level=level, scope=scope, when={"all": [f"{feature} >= 1"]})
    assert f"scope: a {level} rule acts on" in message and f"not {scope}" in message


def test_a_cluster_rule_may_judge_its_members_by_their_own_account_features() -> None:
    members = {"any": ["account.reasoning_share >= 0.05", "account.payment_shared >= 1"]}
    rule = make_rule(level="cluster", when={"all": ["cluster.accounts >= 5"]}, members=members)
    assert rule.members is not None and rule.model_dump()["members"] == members
    assert rule.members.holds({"account.reasoning_share": 0.2})
    assert not rule.members.holds({"account.reasoning_share": 0.0, "account.payment_shared": 0.0})
    assert make_rule().members is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"members": {"all": ["account.n >= 1"]}}, "members: only cluster rules judge their members"),
        (
            {"level": "cluster", "when": {"all": ["cluster.n >= 1"]}, "members": {"all": ["cluster.n >= 1"]}},
            "only `account.` features, not cluster.n",
        ),
        (
            {"level": "cluster", "when": {"all": ["cluster.n >= 1"]}, "members": "account.n >= 1"},
            "`members` is a mapping",
        ),
    ],
)
def test_a_bad_members_condition_is_rejected(fields: dict[str, Any], message: str) -> None:
    assert message in load_error(**fields)


def test_ttl_is_required_unless_the_action_is_flag() -> None:
    assert "ttl: required for action block" in load_error(action="block", ttl=None)


def test_features_must_carry_the_rules_level_prefix() -> None:
    message = load_error(when={"all": ["account.n > 1", "cluster.accounts > 5"]})
    assert "when:" in message and "account rule may use only `account.` features, not cluster.accounts" in message
    message = load_error(level="cluster", when={"any": ["cluster.accounts > 5", {"not": "account.verified == true"}]})
    assert "cluster rule may use only `cluster.` features, not account.verified" in message


def test_an_unknown_key_is_rejected_with_its_name() -> None:
    message = load_error(severty="high")
    assert message.startswith("test.yaml:") and "severty: Extra inputs are not permitted" in message


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"id": "Reasoning_Heavy"}, "id"),
        ({"version": 0}, "version"),
        ({"version": "2"}, "version"),
        ({"level": "org"}, "level"),
        ({"severity": "severe"}, "severity"),
        ({"action": "ban"}, "action"),
        ({"scope": "org"}, "scope"),
        ({"shadow": "yes"}, "shadow"),
        ({"title": ""}, "title"),
        ({"rationale": None}, "rationale"),
    ],
)
def test_invalid_fields_are_named(fields: dict[str, Any], field: str) -> None:
    message = load_error(**fields)
    lines = message.splitlines()
    assert lines[0] == "test.yaml: 1 invalid field(s):"
    assert lines[1].startswith(f"  {field}: ")


@pytest.mark.parametrize(
    "text",
    [
        "account.n >= high",  # ordering needs a number
        "account.n ~ 3",
        "n > 3",  # no level prefix at all
        "account.n >",
        "account.n > 1 2",
        "account.area in coding",
        "account.area in [coding, 3]",
        "account.area in []",
        "account.area == null",
        "account.area == a b",
        "account.n notin [1]",
    ],
)
def test_a_malformed_leaf_is_rejected_with_its_text(text: str) -> None:
    message = load_error(when={"all": ["account.ok > 1", {"not": text}]})
    assert message.startswith("test.yaml:")
    assert f"when.all[1].not: malformed condition {text!r}" in message


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("account.n > 1", "`when` is a mapping with one key: all, any or not"),
        ({"all": []}, "when.all: needs a non-empty list"),
        ({"any": "account.n > 1"}, "when.any: needs a non-empty list"),
        ({"every": ["account.n > 1"]}, "unknown key 'every'"),
        ({"all": ["account.n > 1"], "any": ["account.n > 2"]}, "a mapping with one key"),
        ({"all": [3]}, "when.all[0]: a condition is a leaf string or a mapping"),
    ],
)
def test_a_malformed_condition_tree_is_rejected(when: object, expected: str) -> None:
    assert expected in load_error(when=when)


def test_a_file_that_is_not_a_yaml_mapping_is_rejected() -> None:
    with pytest.raises(RuleError, match=r"^x\.yaml: not valid YAML"):
        parse_rule("id: [unclosed", "x.yaml")
    with pytest.raises(RuleError, match=r"^x\.yaml: a rule is a YAML mapping, got list"):
        parse_rule("- id: a", "x.yaml")


# -- rule sets -------------------------------------------------------------------------------------------
def test_evaluate_returns_hits_of_the_level_with_shadow_and_reasons(tmp_path: Path) -> None:
    write_rule(tmp_path / "a.yaml", id="acct-live", severity="medium", action="challenge", ttl="30m")
    write_rule(tmp_path / "b.yaml", id="acct-shadow", shadow=True, action="flag", ttl=None)
    write_rule(
        tmp_path / "c.yaml",
        id="cluster-wide",
        level="cluster",
        severity="critical",
        action="block",
        ttl="7d",
        when={"all": ["cluster.reasoning_share >= 0.3"]},
    )
    ruleset = RuleSet.load([tmp_path])
    account = {"account.reasoning_share": 0.62}
    reasons = ("account.reasoning_share = 0.62 (>= 0.3)",)
    assert ruleset.evaluate("account", account) == [
        Hit("acct-live", 1, Severity.MEDIUM, Action.CHALLENGE, ScopeKind.ACCOUNT, 1800, False, reasons),
        Hit("acct-shadow", 1, Severity.HIGH, Action.FLAG, ScopeKind.ACCOUNT, None, True, reasons),
    ]
    assert ruleset.evaluate("account", {"account.reasoning_share": 0.1}) == []
    [hit] = ruleset.evaluate("cluster", {"cluster.reasoning_share": 0.5, **account})
    assert (hit.rule_id, hit.scope, hit.ttl, hit.reasons) == (
        "cluster-wide",
        ScopeKind.GROUP,
        7 * 86400,
        ("cluster.reasoning_share = 0.5 (>= 0.3)",),
    )
    with pytest.raises(ValueError, match="org"):
        ruleset.evaluate("org", account)


def test_directories_load_sorted_and_recursively_skipping_other_files(tmp_path: Path) -> None:
    pack = tmp_path / "pack"
    write_rule(pack / "b.yaml", id="b")
    write_rule(pack / "a.yml", id="a")
    write_rule(pack / "sub" / "c.yaml", id="c")
    write_rule(pack / ".hidden.yaml", id="hidden")
    write_rule(pack / ".drafts" / "d.yaml", id="draft")
    (pack / "README.md").write_text("not a rule", encoding="utf-8")
    extra = write_rule(tmp_path / "extra.yaml", id="extra")
    ruleset = RuleSet.load([extra, pack])
    assert [rule.id for rule in ruleset.rules] == ["extra", "a", "b", "c"]


def test_duplicate_ids_are_rejected_naming_both_files(tmp_path: Path) -> None:
    first = write_rule(tmp_path / "one.yaml", id="same")
    second = write_rule(tmp_path / "two.yaml", id="same")
    with pytest.raises(RuleError) as err:
        RuleSet.load([tmp_path])
    assert str(err.value) == f"{second}: rule id 'same' is already defined in {first}"


def test_a_bad_file_fails_the_whole_load_naming_it(tmp_path: Path) -> None:
    write_rule(tmp_path / "good.yaml", id="good")
    bad = write_rule(tmp_path / "bad.yaml", id="bad", when={"all": ["account.n >= lots"]})
    with pytest.raises(RuleError, match=rf"^{bad}: 1 invalid field\(s\):\n  when: .*'account.n >= lots'"):
        RuleSet.load([tmp_path])


def test_a_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="does not exist"):
        RuleSet.load([tmp_path / "nowhere"])


def test_default_loads_the_packaged_rule_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Path(rules_module.__file__).parent / "rules" == rules_module.DEFAULT_DIR
    write_rule(tmp_path / "shipped.yaml", id="shipped")
    monkeypatch.setattr(rules_module, "DEFAULT_DIR", tmp_path)
    assert [rule.id for rule in RuleSet.default().rules] == ["shipped"]


VECTOR_CONDITIONS = [
    {"all": ["account.a >= 0.5", "account.b < 3"]},
    {"any": ["account.a == 1", {"not": "account.b != 2"}]},
    {"all": ["account.a in [0, 1, 2.5]", {"not": "account.b not in [1, 2]"}]},
    {"any": ["account.a > 0.25", "account.c == true", "account.d == word"]},
    {"not": {"all": ["account.a <= 1", "account.b >= 0"]}},
]
FEATURE_VALUES = st.one_of(st.sampled_from([0.0, 0.5, 1.0, 2.0, 2.5, 3.0]), st.just(math.nan), st.floats(-5, 5))


@pytest.mark.parametrize("when", VECTOR_CONDITIONS)
@settings(max_examples=60, deadline=None)
@given(data=st.lists(st.tuples(FEATURE_VALUES, FEATURE_VALUES), min_size=1, max_size=12))
def test_holds_each_agrees_with_holds_row_by_row(when: dict[str, Any], data: list[tuple[float, float]]) -> None:
    """The vectorized path (engine: which accounts any rule fires on) never disagrees with the exact one: NaN is
    absent, and a numeric column never matches a boolean or string literal."""
    condition = rules_module.compile_condition(when)
    columns = {"account.a": np.array([a for a, _ in data]), "account.b": np.array([b for _, b in data])}
    each = condition.holds_each(columns, len(data))
    one_by_one = [condition.holds({"account.a": a, "account.b": b}) for a, b in data]
    assert each.tolist() == one_by_one


def test_evaluate_each_gives_the_hits_evaluate_gives_one_subject_at_a_time() -> None:
    ruleset = RuleSet((make_rule(), make_rule(id="many-agents", when={"all": ["account.distinct_user_agents >= 10"]})))
    columns = {
        "account.reasoning_share": np.array([0.9, 0.1, np.nan, 0.1, 0.95]),
        "account.distinct_user_agents": np.array([1.0, 12.0, 1.0, np.nan, 30.0]),
    }
    each = list(ruleset.evaluate_each("account", columns, 5))
    assert [row for row, _, _ in each] == [0, 1, 4]
    for row, features, hits in each:
        assert features == {name: float(values[row]) for name, values in columns.items()}
        assert hits == ruleset.evaluate("account", features)
    assert [hit.rule_id for hit in each[2][2]] == ["reasoning-heavy", "many-agents"]
    assert list(ruleset.evaluate_each("cluster", columns, 5)) == []


def test_firing_fingerprints_the_rules_that_fire_and_their_shortest_ttl() -> None:
    heavy = make_rule(ttl="7d")
    agents = make_rule(id="many-agents", when={"all": ["account.distinct_user_agents >= 10"]}, ttl="1d")
    columns = {
        "account.reasoning_share": np.array([0.9, 0.1, np.nan, 0.9, 0.95]),
        "account.distinct_user_agents": np.array([1.0, 12.0, 1.0, 1.0, 30.0]),
    }
    firing = RuleSet((heavy, agents)).fire("account", columns, 5)
    digest = firing.fingerprint()
    assert digest[2] == 0 and digest[0] == digest[3]  # none fires; the same rule fires
    assert len({int(d) for d in digest[[0, 1, 4]]}) == 3  # one, the other, both: three digests
    # the digest names the rules, not their order
    assert RuleSet((agents, heavy)).fire("account", columns, 5).fingerprint().tolist() == digest.tolist()
    revised = make_rule(ttl="7d", version=2)
    assert RuleSet((revised, agents)).fire("account", columns, 5).fingerprint()[0] != digest[0]
    assert firing.shortest_ttl().tolist() == [7 * 86_400, 86_400, np.inf, 7 * 86_400, 86_400]
    assert [row for row, _, _ in firing.explain([4, 2])] == [4, 2]
    assert [h.rule_id for h in next(firing.explain([4]))[2]] == ["reasoning-heavy", "many-agents"]


def test_a_request_rule_acts_on_the_key_by_default_or_on_its_account_or_address() -> None:
    when = {"all": ["request.reasoning_extraction_score >= 0.9"]}
    assert make_rule(level="request", when=when).scope is ScopeKind.KEY
    assert make_rule(level="request", when=when, scope="ip").scope is ScopeKind.IP
    assert make_rule(level="request", when=when, scope="account").scope is ScopeKind.ACCOUNT
    assert "may use only `request.` features" in load_error(level="request", when={"all": ["account.n >= 1"]})


def test_text_columns_compare_with_string_literals_row_by_row() -> None:
    areas = np.array(["coding", None, "reasoning", "math"], dtype=object)
    columns = {"request.capability_area": areas, "request.status": np.array([200.0, 200.0, np.nan, 429.0])}
    cases = {
        "request.capability_area == reasoning": [False, False, True, False],
        "request.capability_area != reasoning": [True, False, False, True],  # absent: never holds
        "request.capability_area in [coding, math]": [True, False, False, True],
        "request.capability_area not in [coding, math]": [False, False, True, False],
        "request.capability_area == 3": [False] * 4,  # a text column holds no numbers
        "request.status == coding": [False] * 4,  # nor a numeric column text
        "request.status == 200": [True, True, False, False],
    }
    for text, expected in cases.items():
        rule = make_rule(level="request", when={"all": [text]})
        assert rule.when.holds_each(columns, 4).tolist() == expected, text
        for row in range(4):  # the same answers one request at a time
            features = {name: feature_value(values, row) for name, values in columns.items()}
            assert rule.matches(features) is expected[row], (text, row)
    firing = RuleSet((make_rule(level="request", when={"all": ["request.capability_area == math"]}),)).fire(
        "request", columns, 4
    )
    ((row, features, hits),) = firing.explain([3])
    assert features["request.capability_area"] == "math" and features["request.status"] == 429.0
    assert hits[0].reasons == ("request.capability_area = math (== math)",)
