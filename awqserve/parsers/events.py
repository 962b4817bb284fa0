"""Events produced by the output parsers, the parser protocol, and tool-call id generators.

A parser turns a model's text, arriving as deltas, into an ordered stream of these events. The
serving layer maps them onto OpenAI deltas (`delta.content`, `delta.reasoning_content`,
`delta.tool_calls[i]`) and, for a non-streaming response, accumulates them (`accumulate.py`).

Invariants of one response's event stream (every parser and the combinator keep them):
- Text is never lost or duplicated: every character of the model output is either in a
  `ContentDelta` / `ReasoningDelta`, inside a tool call's name or arguments, or is markup: tags,
  the rest of a complete call's JSON object, and the whitespace next to tags (and a truncated
  close tag at the very end) that each parser's module docstring lists.
- No event carries empty text.
- Tool-call indices count from 0 within a response and are never reused. For each index there is
  exactly one `ToolCallStart`, then zero or more `ToolCallArgumentsDelta`, then exactly one of
  `ToolCallEnd` (the call is complete) or `ToolCallInvalid` (it turned out malformed or truncated).
- For a call that ends with `ToolCallEnd`, the concatenation of its fragments is a JSON text that
  `json.loads` to the arguments object (always an object, `{}` when the model gave none), closing
  brace included. It is the text as the model wrote it (not re-serialised), except for arguments the
  model gave as a JSON-encoded string, which arrive decoded in one fragment.
- Calls do not interleave: a call's events all come before the next call's `ToolCallStart`.
- After `ToolCallInvalid(i)` the raw text of that call follows as `ContentDelta`, so a client that
  ignores tool calls still sees everything; a non-streaming response drops call `i`.
"""
from __future__ import annotations

import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, Union


@dataclass(frozen=True)
class ContentDelta:
    """User-visible answer text (`delta.content`)."""

    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    """Reasoning text, the inside of a `<think>` block (`delta.reasoning_content`)."""

    text: str


@dataclass(frozen=True)
class ToolCallStart:
    """A tool call begins; `name` is complete and final, `id` is `call_` + 24 hex digits."""

    index: int
    id: str
    name: str


@dataclass(frozen=True)
class ToolCallArgumentsDelta:
    """The next piece of call `index`'s arguments JSON text (see the module invariants)."""

    index: int
    fragment: str


@dataclass(frozen=True)
class ToolCallEnd:
    """Call `index` is complete; its fragments concatenate to valid arguments JSON."""

    index: int


@dataclass(frozen=True)
class ToolCallInvalid:
    """Call `index` was started but is malformed or truncated: no `ToolCallEnd` follows, and its raw
    text is passed on as `ContentDelta`. Streaming clients have already seen its start; a server
    may log this. Only emitted for calls that had a `ToolCallStart`."""

    index: int


ParserEvent = Union[ContentDelta, ReasoningDelta, ToolCallStart, ToolCallArgumentsDelta,
                    ToolCallEnd, ToolCallInvalid]

IdFactory = Callable[[], str]


class StreamParser(Protocol):
    """An incremental parser over text deltas. One instance per generated sequence (per choice).

    `feed` may hold back a short tail that could still become markup; `finish` releases it, so the
    events of `feed(a) + feed(b) + finish()` carry the same text, in the same roles, for every
    way of splitting the output into deltas. Neither method raises on any model output; `feed` after
    `finish` is a programming error (RuntimeError).
    """

    def feed(self, delta: str) -> list[ParserEvent]: ...

    def finish(self) -> list[ParserEvent]: ...


def random_call_id() -> str:
    """A fresh OpenAI-style tool call id: `call_` + 24 random hex digits."""
    return "call_" + secrets.token_hex(12)


def seeded_call_ids(seed: int) -> IdFactory:
    """A deterministic id factory (tests, reproducible runs): same seed, same id sequence."""
    rng = random.Random(seed)
    return lambda: "call_" + f"{rng.getrandbits(96):024x}"
