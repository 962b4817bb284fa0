"""Qwen3 reasoning parser and the chat combinator (reasoning, then tools) under every chunking."""
from __future__ import annotations

import json
import random
from collections.abc import Callable

import pytest
from _parser_harness import Summary, assert_all_chunkings, check_invariants, run, summarize
from hypothesis import given, settings
from hypothesis import strategies as st

from awqserve.parsers import (REASONING_PARSERS, TOOL_PARSERS, ChatOutputParser, ContentDelta,
                              HermesToolParser, MessageAccumulator, Qwen3ReasoningParser,
                              ReasoningDelta, StreamParser, build_chat_parser)

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
PARIS = [("get_weather", {"city": "Paris"})]

# (id, starts_in_reasoning, model output, expected (content, reasoning, calls))
REASONING: list[tuple[str, bool, str, Summary]] = [
    ("think_then_answer", False, "<think>\nThe user wants 2+2.\n</think>\n\nThe answer is 4.",
     ("The answer is 4.", "The user wants 2+2.", [])),
    ("opened_by_template", True, "Let me think.\nOK.\n</think>\n\nHi there",
     ("Hi there", "Let me think.\nOK.", [])),
    ("redundant_open_tag", True, "<think>\nr\n</think>\n\nc", ("c", "r", [])),
    ("no_tags", False, "\nHello\n\nworld\n", ("\nHello\n\nworld\n", None, [])),
    ("never_closes", False, "<think>\nstep 1\nstep 2\n", (None, "step 1\nstep 2\n", [])),
    ("never_closes_partial_tag", False, "<think>abc</thi", (None, "abc</thi", [])),
    ("empty_think", False, "<think>\n\n</think>\n\nAnswer", ("Answer", None, [])),
    ("stray_close_without_flag", False, "a </think> b", ("a </think> b", None, [])),
    ("late_open_tag_is_content", False, "Hi <think>x</think>", ("Hi <think>x</think>", None, [])),
    ("partial_open_tag_only", False, "<thin", ("<thin", None, [])),
    ("lookalike_tags", False, "<think>a </thinking> <think> b</think>c <", (
        "c <", "a </thinking> <think> b", [])),
    ("leading_whitespace", False, " \n<think>r</think>c", ("c", "r", [])),
    ("crlf", False, "<think>\r\nr\r\n</think>\r\n\r\n  c", ("  c", "r", [])),
    ("only_reasoning_closed", True, "r</think>", (None, "r", [])),
    ("empty", False, "", ("", None, [])),
    ("empty_in_reasoning", True, "", ("", None, [])),
]

# Reasoning and tool calls together (hermes after qwen3).
COMBINED: list[tuple[str, bool, str, Summary]] = [
    ("reasoning_then_call", False, "<think>\nI should call get_weather. Maybe <tool_call> "
     "helps.\n</think>\n\n" + CALL,
     (None, "I should call get_weather. Maybe <tool_call> helps.", PARIS)),
    ("call_inside_reasoning_is_reasoning", False, "<think>\n" + CALL + "\n</think>\n\nNo.",
     ("No.", CALL, [])),
    ("think_never_closes", False, '<think>\nunfinished <tool_call>{"name": "x"',
     (None, 'unfinished <tool_call>{"name": "x"', [])),
    ("template_opened_then_content_and_call", True, "r</think>\n\nChecking.\n" + CALL,
     ("Checking.", "r", PARIS)),
    ("no_reasoning_call", False, CALL, (None, None, PARIS)),
    ("truncated_call_after_reasoning", False, '<think>r</think><tool_call>{"name": "f", "ar',
     ('<tool_call>{"name": "f", "ar', "r", [])),
]


def _reasoning_only(starts: bool) -> Callable[[], StreamParser]:
    return lambda: Qwen3ReasoningParser(starts_in_reasoning=starts)


def _combined(starts: bool) -> Callable[[], StreamParser]:
    return lambda: build_chat_parser("hermes", "qwen3", starts_in_reasoning=starts)


@pytest.mark.parametrize("starts, text, expected", [c[1:] for c in REASONING],
                         ids=[c[0] for c in REASONING])
def test_reasoning_every_chunking(starts: bool, text: str, expected: Summary) -> None:
    assert_all_chunkings(_reasoning_only(starts), text, expected)
    # Without a tool parser the combinator is the reasoning parser.
    assert_all_chunkings(lambda: ChatOutputParser(Qwen3ReasoningParser(starts)), text, expected)


@pytest.mark.parametrize("starts, text, expected", [c[1:] for c in COMBINED],
                         ids=[c[0] for c in COMBINED])
def test_combined_every_chunking(starts: bool, text: str, expected: Summary) -> None:
    assert_all_chunkings(_combined(starts), text, expected)


def test_reasoning_streams_without_waiting_for_the_close_tag() -> None:
    parser = Qwen3ReasoningParser()
    assert parser.feed("<thi") == []
    assert parser.feed("nk>\nSo") == [ReasoningDelta("So")]
    assert parser.feed(" far\n</th") == [ReasoningDelta(" far")]
    assert parser.feed("ink>\n\nAns") == [ContentDelta("Ans")]
    assert parser.finish() == []


def test_plain_parsers_and_registry() -> None:
    assert TOOL_PARSERS["hermes"] is HermesToolParser
    assert REASONING_PARSERS["qwen3"] is Qwen3ReasoningParser
    assert run(ChatOutputParser, ["a", "", "b"]) == [ContentDelta("a"), ContentDelta("b")]
    with pytest.raises(ValueError, match="known: hermes"):
        build_chat_parser("mistral")
    assert Qwen3ReasoningParser.prompt_opens_reasoning("<|im_start|>assistant\n<think>\n")
    assert not Qwen3ReasoningParser.prompt_opens_reasoning("<think>\n\n</think>\n\n")


def test_accumulator_message_shape() -> None:
    acc = MessageAccumulator()
    acc.extend(run(_combined(False), ["<think>r</think>" + CALL]))
    message = acc.result()
    assert acc.has_tool_calls and message.content is None and message.reasoning == "r"
    (call,) = message.tool_calls
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}


# -- property test: random reasoning, content and a call, randomly chunked --------------------
_TEXT = st.text(alphabet="ab <>/_thinkcol\n{}\"", max_size=20).filter(
    lambda s: not any(t in s for t in ("<think>", "</think>", "<tool_call>", "</tool_call>")))


@settings(max_examples=150, deadline=None)
@given(_TEXT, _TEXT, st.booleans(), st.booleans(), st.randoms())
def test_random_reasoning_round_trip(reasoning: str, content: str, call: bool,
                                     starts: bool, rng: random.Random) -> None:
    text = ("" if starts else "<think>") + reasoning + "</think>" + content + (CALL if call else "")
    want_reasoning = reasoning.strip("\r\n") or None
    want_content = content.lstrip("\r\n")
    if call:
        want_content = want_content.rstrip(" \t\r\n")
    expected = (want_content or (None if call or want_reasoning else ""), want_reasoning,
                PARIS if call else [])
    cuts = sorted(rng.randint(0, len(text)) for _ in range(rng.randint(0, 12)))
    chunks = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
    for feed in (chunks, [text]):
        events = run(_combined(starts), feed)
        assert [json.loads(a) for a in check_invariants(events)] == [c[1] for c in expected[2]]
        assert summarize(events) == expected
