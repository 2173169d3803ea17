"""Reasoning trace formats: the inline `<think>` block whole and in stream pieces split anywhere."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hydraguard.controls.trace import ThinkScanner, Trace, put_trace, split_think, take_trace

ANSWERS = [
    "<think>weigh it</think>\n\nThe answer.",
    "  <think>a < b, </thin not yet</think>answer",
    "<think>cut off before closing",
    "No reasoning here.",
    "<thinking> is not the tag",
    "<b>bold</b>",
    "",
]


def scan(pieces: list[str]) -> tuple[str, str | None]:
    scanner = ThinkScanner()
    passed = "".join(scanner.feed(p) for p in pieces) + scanner.finish()
    return passed, ("".join(scanner.trace) if scanner.found else None)


@pytest.mark.parametrize("content", ANSWERS)
def test_scanner_matches_split_think_at_every_cut(content):
    split = split_think(content)
    expected = (split[1], split[0]) if split is not None else (content, None)
    for cut in range(len(content) + 1):
        for second in range(cut, len(content) + 1):
            assert scan([content[:cut], content[cut:second], content[second:]]) == expected, (cut, second)


@given(st.lists(st.sampled_from(["<", "think", ">", "</", "think>", "x", " ", "\n", "<think>", "</think>"])))
def test_scanner_matches_split_think_on_any_pieces(pieces):
    content = "".join(pieces)
    split = split_think(content)
    assert scan(pieces) == ((split[1], split[0]) if split is not None else (content, None))


def test_scanner_passes_the_answer_as_it_arrives():
    scanner = ThinkScanner()
    assert [scanner.feed(p) for p in ["<thi", "nk>", "step", "</th", "ink>\n\n", "Hello", " world"]] == [
        "",
        "",
        "",
        "",
        "",
        "Hello",
        " world",
    ]
    assert scanner.closed and "".join(scanner.trace) == "step"


def test_take_and_put_round_trip_both_formats():
    for message, trace in [
        ({"role": "assistant", "content": "A", "reasoning_content": "r"}, Trace("r", "field", "reasoning_content")),
        ({"role": "assistant", "content": "A", "reasoning": "r"}, Trace("r", "field", "reasoning")),
        ({"role": "assistant", "content": "<think>r</think>\n\nA"}, Trace("r", "think")),
    ]:
        original = dict(message)
        assert take_trace(message) == trace
        assert message == {"role": "assistant", "content": "A"}
        put_trace(message, trace)
        assert message == original
    assert take_trace({"role": "assistant", "content": "plain"}) is None
