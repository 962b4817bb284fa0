"""Shared helpers for the output-parser tests: chunkings, event-stream invariants, summaries."""
from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator
from typing import Any

from awqserve.parsers import (ContentDelta, ParserEvent, ReasoningDelta, StreamParser,
                              ToolCallArgumentsDelta, ToolCallEnd, ToolCallInvalid, ToolCallStart,
                              accumulate)

_ID = re.compile(r"call_[0-9a-f]{24}")

Summary = tuple[str | None, str | None, list[tuple[str, Any]]]


def chunkings(text: str, n_random: int = 200, seed: int = 0) -> Iterator[list[str]]:
    """One chunk; one character per chunk; every 2-way split; `n_random` random chunkings."""
    yield [text]
    yield list(text)
    for i in range(len(text) + 1):
        yield [text[:i], text[i:]]
    rng = random.Random(seed)
    for _ in range(n_random):
        yield random_split(text, rng)


def random_split(text: str, rng: random.Random) -> list[str]:
    """Cut at random points, some chunks empty, sizes from 1 to about a tag's length."""
    chunks, pos = [], 0
    while pos < len(text):
        size = rng.choice((0, 1, 1, 2, 3, 5, 8, 13))
        chunks.append(text[pos:pos + size])
        pos += size
    return chunks


def run(make_parser: Callable[[], StreamParser], chunks: list[str]) -> list[ParserEvent]:
    """Feed `chunks` to a fresh parser, then finish it."""
    parser = make_parser()
    events: list[ParserEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    events.extend(parser.finish())
    return events


def check_invariants(events: list[ParserEvent]) -> list[str]:
    """Assert the stream invariants of `events.py`; returns each completed call's arguments text."""
    open_index: int | None = None
    next_index = 0
    parts: list[str] = []
    completed: list[str] = []
    for event in events:
        if isinstance(event, (ContentDelta, ReasoningDelta)):
            assert event.text, "empty text event"
            assert open_index is None, "text inside an open call"
        elif isinstance(event, ToolCallStart):
            assert open_index is None, "calls interleave"
            assert event.index == next_index and _ID.fullmatch(event.id) and event.name
            open_index, next_index, parts = event.index, next_index + 1, []
        elif isinstance(event, ToolCallArgumentsDelta):
            assert event.index == open_index and event.fragment
            parts.append(event.fragment)
        elif isinstance(event, ToolCallEnd):
            assert event.index == open_index
            text = "".join(parts)
            assert isinstance(json.loads(text), dict), text
            completed.append(text)
            open_index = None
        elif isinstance(event, ToolCallInvalid):
            assert event.index == open_index
            open_index = None
    assert open_index is None, "a call was left open after finish()"
    return completed


def summarize(events: list[ParserEvent]) -> Summary:
    """(content, reasoning, [(name, arguments object)]) with ids left out (they are random)."""
    message = accumulate(events)
    calls = [(c["function"]["name"], json.loads(c["function"]["arguments"]))
             for c in message.tool_calls]
    return message.content, message.reasoning, calls


def assert_all_chunkings(make_parser: Callable[[], StreamParser], text: str,
                         expected: Summary) -> None:
    """Every chunking gives the expected message, through a valid event stream."""
    for chunks in chunkings(text):
        events = run(make_parser, chunks)
        args = check_invariants(events)
        got = summarize(events)
        assert got == expected, f"chunks={chunks!r}"
        assert [json.loads(a) for a in args] == [c[1] for c in expected[2]]
