"""Fold a parser event stream into the fields of a final assistant message (OpenAI's shape)."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from awqserve.parsers.events import (ContentDelta, ParserEvent, ReasoningDelta,
                                     ToolCallArgumentsDelta, ToolCallEnd, ToolCallInvalid,
                                     ToolCallStart)


@dataclass
class ParsedMessage:
    """The message fields: `content` and `reasoning` are None when the model produced none (but
    `content` is "" for an output with nothing at all, as OpenAI returns an empty answer);
    `tool_calls` holds the complete calls in index order as
    `{"id", "type": "function", "function": {"name", "arguments": <JSON text>}}`."""

    content: str | None
    reasoning: str | None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Call:
    id: str
    name: str
    parts: list[str] = field(default_factory=list)
    complete: bool = False


class MessageAccumulator:
    """Collects events as they stream (e.g. to log or to decide `finish_reason`)."""

    def __init__(self) -> None:
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[int, _Call] = {}

    def add(self, event: ParserEvent) -> None:
        """Record one event; calls that end with `ToolCallInvalid` are forgotten."""
        if isinstance(event, ContentDelta):
            self._content.append(event.text)
        elif isinstance(event, ReasoningDelta):
            self._reasoning.append(event.text)
        elif isinstance(event, ToolCallStart):
            self._calls[event.index] = _Call(event.id, event.name)
        elif isinstance(event, ToolCallArgumentsDelta):
            self._calls[event.index].parts.append(event.fragment)
        elif isinstance(event, ToolCallEnd):
            self._calls[event.index].complete = True
        elif isinstance(event, ToolCallInvalid):
            del self._calls[event.index]

    def extend(self, events: Iterable[ParserEvent]) -> None:
        for event in events:
            self.add(event)

    @property
    def has_tool_calls(self) -> bool:
        """True once a call is complete: the response's finish_reason is then "tool_calls"."""
        return any(call.complete for call in self._calls.values())

    def result(self) -> ParsedMessage:
        calls = [{"id": c.id, "type": "function",
                  "function": {"name": c.name, "arguments": "".join(c.parts)}}
                 for _, c in sorted(self._calls.items()) if c.complete]
        content = "".join(self._content)
        reasoning = "".join(self._reasoning) or None
        if not content and (calls or reasoning):
            return ParsedMessage(None, reasoning, calls)
        return ParsedMessage(content, reasoning, calls)


def accumulate(events: Iterable[ParserEvent]) -> ParsedMessage:
    """The final message fields of a complete event stream (`feed`s and `finish`)."""
    acc = MessageAccumulator()
    acc.extend(events)
    return acc.result()
