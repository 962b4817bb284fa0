"""One chat choice's output: engine text deltas → parser events → OpenAI message fields and stream deltas.

Per choice, one `ChatOutputParser` (awqserve/parsers) splits the text into content, reasoning and
hermes tool calls. Reasoning is reported under both `reasoning_content` (vLLM's historical name) and
`reasoning` (the newer one), because clients read either. A choice that produced a complete tool call
and stopped naturally finishes with "tool_calls"; one cut by `max_tokens` stays "length".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from awqserve.parsers import (ChatOutputParser, ContentDelta, MessageAccumulator, ParserEvent, ReasoningDelta,
                              ToolCallArgumentsDelta, ToolCallStart)


@dataclass
class ChoiceOutput:
    """The parsed state of one choice; `reasoning` says whether reasoning fields are reported at all."""

    parser: ChatOutputParser
    reasoning: bool
    acc: MessageAccumulator = field(default_factory=MessageAccumulator)
    tokens: int = 0
    finish: str | None = None
    logprobs: list[Any] = field(default_factory=list)

    def feed(self, text: str, finished: bool) -> list[ParserEvent]:
        """Events for a new text delta (and the parser's flush when the choice finished)."""
        events = self.parser.feed(text) if text else []
        if finished:
            events += self.parser.finish()
        self.acc.extend(events)
        return events

    def finish_reason(self, engine_reason: str) -> str:
        if engine_reason == "stop" and self.acc.has_tool_calls:
            return "tool_calls"
        return engine_reason

    def message(self) -> dict[str, Any]:
        """The final assistant message (OpenAI's ChatCompletionResponseMessage)."""
        parsed = self.acc.result()
        msg: dict[str, Any] = {"role": "assistant", "content": parsed.content, "refusal": None}
        if self.reasoning:
            msg["reasoning_content"] = msg["reasoning"] = parsed.reasoning
        if parsed.tool_calls:
            msg["tool_calls"] = parsed.tool_calls
        return msg


def stream_deltas(events: list[ParserEvent], reasoning: bool) -> list[dict[str, Any]]:
    """Parser events as chat.completion.chunk `delta` objects, merging neighbours of the same kind."""
    deltas: list[dict[str, Any]] = []
    for ev in events:
        delta = _delta(ev, reasoning)
        if delta is None:
            continue
        if deltas and _mergeable(deltas[-1], delta):
            key = next(iter(delta))
            if key == "tool_calls":
                deltas[-1]["tool_calls"][0]["function"]["arguments"] += delta["tool_calls"][0]["function"]["arguments"]
            else:
                for k in delta:
                    deltas[-1][k] += delta[k]
        else:
            deltas.append(delta)
    return deltas


def _delta(ev: ParserEvent, reasoning: bool) -> dict[str, Any] | None:
    if isinstance(ev, ContentDelta):
        return {"content": ev.text}
    if isinstance(ev, ReasoningDelta):
        return {"reasoning_content": ev.text, "reasoning": ev.text} if reasoning else {"content": ev.text}
    if isinstance(ev, ToolCallStart):
        return {"tool_calls": [{"index": ev.index, "id": ev.id, "type": "function",
                                "function": {"name": ev.name, "arguments": ""}}]}
    if isinstance(ev, ToolCallArgumentsDelta):
        return {"tool_calls": [{"index": ev.index, "function": {"arguments": ev.fragment}}]}
    return None  # ToolCallEnd / ToolCallInvalid: nothing to send


def _mergeable(prev: dict[str, Any], new: dict[str, Any]) -> bool:
    if prev.keys() != new.keys():
        return False
    if "tool_calls" not in new:
        return True
    a, b = prev["tool_calls"][0], new["tool_calls"][0]
    # argument fragments of one call join; a call's start stays its own delta (id and name once)
    return a["index"] == b["index"] and "id" not in b
