"""Hermes tool-call parser: recorded-style outputs under every chunking, and a property test."""
from __future__ import annotations

import json
from typing import Any

import pytest
from _parser_harness import Summary, assert_all_chunkings, check_invariants, run, summarize
from hypothesis import given, settings
from hypothesis import strategies as st

from awqserve.parsers import (ContentDelta, HermesToolParser, ToolCallArgumentsDelta,
                              ToolCallEnd, ToolCallInvalid, ToolCallStart, parse_complete,
                              seeded_call_ids)

WEATHER = {"city": "Paris", "unit": "celsius"}
TRICKY = {"query": {"text": "a } b { c ]", "quote": 'say "hi"', "path": "C:\\dir\\",
                    "unicode": "caf\u00e9 \U0001F600", "tags": "</tool_call><tool_call>"},
          "list": [1, [2, {"x": None}], True, -3.5e2], "empty": {}, "n": 42}
MALFORMED = '<tool_call>\n{"name": "f", "arguments": {"a": 1,}}\n</tool_call>'

# (id, model output, expected (content, reasoning, [(name, arguments)]))
CORPUS: list[tuple[str, str, Summary]] = [
    ("single", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": '
     '"celsius"}}\n</tool_call>', (None, None, [("get_weather", WEATHER)])),
    ("parallel", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": '
     '"celsius"}}\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {"tz": '
     '"Europe/Paris"}}\n</tool_call>',
     (None, None, [("get_weather", WEATHER), ("get_time", {"tz": "Europe/Paris"})])),
    ("content_then_call", "I'll look that up for you.\n\n<tool_call>\n{\"name\": \"search\", "
     "\"arguments\": {\"q\": \"awq\"}}\n</tool_call>",
     ("I'll look that up for you.", None, [("search", {"q": "awq"})])),
    ("call_then_content", '<tool_call>\n{"name": "f", "arguments": {"a": true}}\n</tool_call>'
     "\n\nDone.", ("Done.", None, [("f", {"a": True})])),
    ("tricky_strings", "<tool_call>\n" + json.dumps({"name": "run", "arguments": TRICKY})
     + "\n</tool_call>", (None, None, [("run", TRICKY)])),
    ("tricky_ascii_escapes", "<tool_call>\n" + json.dumps({"name": "run", "arguments": TRICKY},
                                                          ensure_ascii=True) + "\n</tool_call>",
     (None, None, [("run", TRICKY)])),
    ("compact", '<tool_call>{"name":"f","arguments":{"a":1,"b":[2,3]}}</tool_call>',
     (None, None, [("f", {"a": 1, "b": [2, 3]})])),
    ("spread_out", '<tool_call>\n  {\n    "name" : "f" ,\n    "arguments" :\n      {\n  "a" : '
     '1.5\n }\n  }\n\n</tool_call>\n', (None, None, [("f", {"a": 1.5})])),
    ("arguments_first", '<tool_call>\n{"arguments": {"city": "Paris", "unit": "celsius"}, '
     '"name": "get_weather"}\n</tool_call>', (None, None, [("get_weather", WEATHER)])),
    ("string_arguments", '<tool_call>\n{"name": "f", "arguments": "{\\"a\\": 1, \\"s\\": '
     '\\"}\\"}"}\n</tool_call>', (None, None, [("f", {"a": 1, "s": "}"})])),
    ("parameters_alias", '<tool_call>\n{"name": "f", "parameters": {"x": null}}\n</tool_call>',
     (None, None, [("f", {"x": None})])),
    ("no_arguments", '<tool_call>\n{"name": "now"}\n</tool_call>', (None, None, [("now", {})])),
    ("empty_arguments", '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>',
     (None, None, [("now", {})])),
    ("extra_key", '<tool_call>\n{"name": "f", "id": 7, "arguments": {"a": false}}\n</tool_call>',
     (None, None, [("f", {"a": False})])),
    ("malformed", MALFORMED, (MALFORMED, None, [])),
    ("malformed_then_valid", "Try:\n" + MALFORMED + '\n<tool_call>\n{"name": "g", "arguments": '
     '{}}\n</tool_call>', ("Try:\n" + MALFORMED, None, [("g", {})])),
    ("invalid_after_start", 'x <tool_call>{"name": "f", "arguments": {"a": tru}}</tool_call> y',
     ('x <tool_call>{"name": "f", "arguments": {"a": tru}}</tool_call> y', None, [])),
    ("invalid_then_valid", '<tool_call>{"name": "f", "arguments": [1]}</tool_call>\n<tool_call>'
     '{"name": "g", "arguments": {"ok": 1}}</tool_call>',
     ('<tool_call>{"name": "f", "arguments": [1]}</tool_call>', None, [("g", {"ok": 1})])),
    ("nan", '<tool_call>{"name": "f", "arguments": {"a": NaN}}</tool_call>',
     ('<tool_call>{"name": "f", "arguments": {"a": NaN}}</tool_call>', None, [])),
    ("raw_newline_in_string", '<tool_call>{"name": "f", "arguments": {"b": "x\ny"}}</tool_call>',
     ('<tool_call>{"name": "f", "arguments": {"b": "x\ny"}}</tool_call>', None, [])),
    ("duplicate_name", '<tool_call>{"name": "f", "name": "g", "arguments": {}}</tool_call>',
     ('<tool_call>{"name": "f", "name": "g", "arguments": {}}</tool_call>', None, [])),
    ("empty_name", '<tool_call>{"name": "", "arguments": {}}</tool_call>',
     ('<tool_call>{"name": "", "arguments": {}}</tool_call>', None, [])),
    ("not_json", "<tool_call>\nget_weather(city='Paris')\n</tool_call>",
     ("<tool_call>\nget_weather(city='Paris')\n</tool_call>", None, [])),
    ("truncated_mid_call", 'Sure.\n<tool_call>\n{"name": "f", "arguments": {"a": "incompl',
     ('Sure.\n<tool_call>\n{"name": "f", "arguments": {"a": "incompl', None, [])),
    ("truncated_before_name", "<tool_call>\n{\"na", ("<tool_call>\n{\"na", None, [])),
    ("truncated_close_tag", '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool',
     (None, None, [("f", {"a": 1})])),
    ("missing_close_tag", '<tool_call>{"name": "a", "arguments": {}}\n<tool_call>{"name": "b",'
     ' "arguments": {"k": "v"}}</tool_call>', (None, None, [("a", {}), ("b", {"k": "v"})])),
    ("not_a_tag", "Use <tools> or <tool_ and <tool_call_id>; a < b.\n<tool",
     ("Use <tools> or <tool_ and <tool_call_id>; a < b.\n<tool", None, [])),
    ("plain", "Hello!\n\n  How can I help?  \n", ("Hello!\n\n  How can I help?  \n", None, [])),
    ("empty", "", ("", None, [])),
]


@pytest.mark.parametrize("text, expected", [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_every_chunking_gives_the_same_message(text: str, expected: Summary) -> None:
    assert_all_chunkings(HermesToolParser, text, expected)


@pytest.mark.parametrize("text, expected", [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_parse_complete_agrees(text: str, expected: Summary) -> None:
    content, calls = parse_complete(text)
    assert content == (expected[0] or "")
    assert [(c.name, json.loads(c.arguments_json)) for c in calls] == expected[2]


def test_start_and_fragments_stream_before_the_call_ends() -> None:
    parser = HermesToolParser(seeded_call_ids(1))
    assert parser.feed("Checking <tool") == [ContentDelta("Checking")]
    assert parser.feed('_call>\n{"name": "get_wea') == []
    assert parser.feed('ther", ') == [ToolCallStart(0, seeded_call_ids(1)(), "get_weather")]
    assert parser.feed('"arguments": {"city": "Par') == [ToolCallArgumentsDelta(0, '{"city": "Par')]
    assert parser.feed('is"}}') == [ToolCallArgumentsDelta(0, 'is"}'), ToolCallEnd(0)]
    assert parser.feed("\n</tool_call>") == [] and parser.finish() == []


def test_closing_braces_of_numeric_and_nested_arguments_are_kept() -> None:
    # vLLM #22885 / #21301: the last `}` (after a number or a nested object) or `{}` went missing.
    for args in ('{"n": 42}', '{"b": true}', '{"o": {"p": {}}}', "{}"):
        text = '<tool_call>{"name": "f", "arguments": ' + args + "}</tool_call>"
        for chunks in (list(text), [text]):
            events = run(HermesToolParser, chunks)
            assert check_invariants(events) == [args]


def test_invalid_event_precedes_the_raw_text() -> None:
    events = run(HermesToolParser, ['<tool_call>{"name": "f", "arguments": [1]}</tool_call>'])
    assert isinstance(events[0], ToolCallStart) and isinstance(events[1], ToolCallInvalid)
    assert "".join(e.text for e in events[2:] if isinstance(e, ContentDelta)) == (
        '<tool_call>{"name": "f", "arguments": [1]}</tool_call>')


def test_ids_come_from_the_injected_factory_and_feed_after_finish_raises() -> None:
    ids = seeded_call_ids(7)
    events = run(lambda: HermesToolParser(seeded_call_ids(7)), [CORPUS[1][1]])
    assert [e.id for e in events if isinstance(e, ToolCallStart)] == [ids(), ids()]
    parser = HermesToolParser()
    parser.finish()
    with pytest.raises(RuntimeError):
        parser.feed("x")
    assert HermesToolParser.TRIGGER == "<tool_call>"


# -- property test: random calls in random content, randomly chunked --------------------------
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8)
_ARGS = st.dictionaries(st.text(max_size=8), _JSON, max_size=4)
_CONTENT = st.text(alphabet="ab <>/_tolc\n\t{}\"\\é", max_size=16).filter(
    lambda s: "<tool_call>" not in s and "</tool_call>" not in s)
_WS = " \t\r\n"


@st.composite
def _call_markup(draw: st.DrawFn) -> tuple[str, str, dict[str, Any]]:
    name = draw(st.text(min_size=1, max_size=10))
    args = draw(_ARGS)
    key = draw(st.sampled_from(["arguments", "parameters"]))
    value: Any = json.dumps(args) if draw(st.integers(0, 4)) == 0 else args  # string-encoded
    body = {key: value, "name": name} if draw(st.booleans()) else {"name": name, key: value}
    indent = draw(st.sampled_from([None, 0, 2]))
    seps = draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    raw = json.dumps(body, indent=indent, separators=seps, ensure_ascii=draw(st.booleans()))
    return f"<tool_call>{draw(st.sampled_from(['', chr(10)]))}{raw}\n</tool_call>", name, args


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_CONTENT, _call_markup()), max_size=3), _CONTENT, st.randoms())
def test_random_calls_round_trip(pairs: list[tuple[str, tuple[str, str, dict[str, Any]]]],
                                 tail: str, rng: Any) -> None:
    pieces = [c for c, _ in pairs] + [tail]
    text = "".join(c + call[0] for c, call in pairs) + tail
    if pairs:  # whitespace touching call markup is dropped
        pieces = [p.rstrip(_WS) if i == 0 else p.strip(_WS) if i < len(pairs) else p.lstrip(_WS)
                  for i, p in enumerate(pieces)]
    content = "".join(pieces)
    expected = (content or (None if pairs else ""), None, [(n, a) for _, (_, n, a) in pairs])
    chunks, pos = [], 0
    while pos < len(text):
        size = rng.randint(0, 6)
        chunks.append(text[pos:pos + size])
        pos += size
    for feed in (chunks, [text]):
        events = run(HermesToolParser, feed)
        check_invariants(events)
        assert summarize(events) == expected
