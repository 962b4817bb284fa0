"""Output parsers: pure functions over text deltas that split a model's output into content,
reasoning and tool calls (no engine knowledge). One module per format; `events.py` states the
invariants every parser keeps; the serving layer maps the events onto OpenAI deltas.

    parser = build_chat_parser(tool_parser="hermes", reasoning_parser="qwen3")  # per choice
    for delta in deltas:
        for event in parser.feed(delta): ...
    for event in parser.finish(): ...

Pass `tool_parser=None` when a request has no tools (or `tool_choice` is "none"), so a
`<tool_call>` the model writes anyway stays content.
"""
from __future__ import annotations

from collections.abc import Callable

from awqserve.parsers.accumulate import MessageAccumulator, ParsedMessage, accumulate
from awqserve.parsers.chat import ChatOutputParser
from awqserve.parsers.events import (ContentDelta, IdFactory, ParserEvent, ReasoningDelta,
                                     StreamParser, ToolCallArgumentsDelta, ToolCallEnd,
                                     ToolCallInvalid, ToolCallStart, random_call_id,
                                     seeded_call_ids)
from awqserve.parsers.reasoning_qwen3 import Qwen3ReasoningParser
from awqserve.parsers.tool_hermes import HermesToolParser, ParsedToolCall, parse_complete

TOOL_PARSERS: dict[str, Callable[..., StreamParser]] = {"hermes": HermesToolParser}
REASONING_PARSERS: dict[str, Callable[..., StreamParser]] = {"qwen3": Qwen3ReasoningParser}


def build_chat_parser(tool_parser: str | None = None, reasoning_parser: str | None = None, *,
                      starts_in_reasoning: bool = False,
                      id_factory: IdFactory | None = None) -> ChatOutputParser:
    """A fresh combinator for one sequence, from the `--tool-call-parser` / `--reasoning-parser`
    names; an unknown name raises ValueError listing the known ones."""
    reasoning = None
    if reasoning_parser is not None:
        reasoning = _lookup(REASONING_PARSERS, reasoning_parser, "reasoning parser")(
            starts_in_reasoning=starts_in_reasoning)
    tools = None
    if tool_parser is not None:
        tools = _lookup(TOOL_PARSERS, tool_parser, "tool-call parser")(id_factory=id_factory)
    return ChatOutputParser(reasoning, tools)


def _lookup(registry: dict[str, Callable[..., StreamParser]], name: str,
            what: str) -> Callable[..., StreamParser]:
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; known: {', '.join(sorted(registry))}")
    return registry[name]


__all__ = [
    "TOOL_PARSERS", "REASONING_PARSERS", "build_chat_parser", "ChatOutputParser",
    "MessageAccumulator", "ParsedMessage", "accumulate", "HermesToolParser", "ParsedToolCall",
    "parse_complete", "Qwen3ReasoningParser", "ContentDelta", "ReasoningDelta", "ToolCallStart",
    "ToolCallArgumentsDelta", "ToolCallEnd", "ToolCallInvalid", "ParserEvent", "StreamParser",
    "IdFactory", "random_call_id", "seeded_call_ids",
]
