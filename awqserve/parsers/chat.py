"""Chain a reasoning parser and a tool parser into one event stream for a chat response.

Text goes through the reasoning parser first; its content events go on through the tool parser,
so tool calls are only recognised outside reasoning. Reasoning events pass through as they are.
Order is kept: an event for earlier output text never comes after one for later text.
"""
from __future__ import annotations

from awqserve.parsers.events import ContentDelta, ParserEvent, StreamParser


class ChatOutputParser:
    """One per generated sequence (per choice of a request); either parser may be None.

    Streaming use: `feed(delta.text)` for every engine output delta, map the returned events onto
    the choice's SSE deltas, then `finish()` once the sequence finished and map those too, before
    the chunk carrying `finish_reason`. Non-streaming: `accumulate(feed(text) + finish())`.
    """

    def __init__(self, reasoning: StreamParser | None = None,
                 tools: StreamParser | None = None) -> None:
        self.reasoning = reasoning
        self.tools = tools

    def feed(self, delta: str) -> list[ParserEvent]:
        """Consume the next piece of model output."""
        if self.reasoning is None:
            return self._tool_feed(delta)
        return self._route(self.reasoning.feed(delta))

    def finish(self) -> list[ParserEvent]:
        """End of output: flush the reasoning parser (through the tool parser), then the tools."""
        out = self._route(self.reasoning.finish()) if self.reasoning is not None else []
        if self.tools is not None:
            out.extend(self.tools.finish())
        return out

    def _route(self, events: list[ParserEvent]) -> list[ParserEvent]:
        out: list[ParserEvent] = []
        for event in events:
            if isinstance(event, ContentDelta):
                out.extend(self._tool_feed(event.text))
            else:
                out.append(event)
        return out

    def _tool_feed(self, text: str) -> list[ParserEvent]:
        if self.tools is not None:
            return self.tools.feed(text)
        return [ContentDelta(text)] if text else []
