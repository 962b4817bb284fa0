"""Parser events (awqserve/parsers) → Responses output items, the stream events that build them, and
their SSE framing.

`OutputItems` is fed the events of the one output sequence and answers, for each batch, the stream
events it implies (dicts with `type` and their fields, but no `sequence_number`: the stream adds
it). The non-streaming path feeds the same events and drops the stream events, so both paths build
the same items by construction.

Invariants:
- At most one item is open. Content text opens (or continues) a `message`, reasoning text a
  `reasoning` item, each `ToolCallStart` a new `function_call`; opening one closes the open one.
- Every item announced by `response.output_item.added` gets exactly one `response.output_item.done`;
  `output_index` counts the announced items from 0.
- A call the parser declares invalid (malformed, or cut by the token limit) is closed with status
  `incomplete` in the stream and left out of `output`, as chat leaves it out of `tool_calls`; its raw
  text follows as message content. `output_index` values of later items then skip it.
- An output with no items at all is one empty message, so every response has text to read.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Sequence

from awqserve.entrypoints.openai.errors import APIError
from awqserve.entrypoints.openai.responses_items import new_id
from awqserve.parsers import (ContentDelta, ParserEvent, ReasoningDelta, ToolCallArgumentsDelta, ToolCallEnd,
                              ToolCallInvalid, ToolCallStart)

Event = dict[str, Any]


@dataclass
class _Open:
    index: int  # output_index
    item: dict[str, Any]
    call: int | None = None  # the parser's call index, for function calls


def _text_part(kind: str) -> dict[str, Any]:
    if kind == "message":
        return {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    return {"type": "reasoning_text", "text": ""}


class OutputItems:
    """The output items of one response under construction (see the module invariants)."""

    def __init__(self) -> None:
        self.announced: list[dict[str, Any]] = []  # every item, by output_index
        self.dropped: set[int] = set()
        self.open: _Open | None = None

    @property
    def output(self) -> list[dict[str, Any]]:
        """The response's `output`: announced items minus invalid calls."""
        return [item for i, item in enumerate(self.announced) if i not in self.dropped]

    def feed(self, events: Sequence[ParserEvent]) -> list[Event]:
        out: list[Event] = []
        for ev in events:
            if isinstance(ev, (ContentDelta, ReasoningDelta)):
                out += self._text(ev)
            elif isinstance(ev, ToolCallStart):
                out += self._close("completed")
                out += self._add({"id": new_id("fc"), "type": "function_call", "status": "in_progress",
                                  "call_id": ev.id, "name": ev.name, "arguments": ""}, call=ev.index)
            elif isinstance(ev, ToolCallArgumentsDelta) and self._is_call(ev.index):
                assert self.open is not None
                self.open.item["arguments"] += ev.fragment
                out.append(self._ref("response.function_call_arguments.delta", delta=ev.fragment))
            elif isinstance(ev, (ToolCallEnd, ToolCallInvalid)) and self._is_call(ev.index):
                if isinstance(ev, ToolCallInvalid):
                    assert self.open is not None
                    self.dropped.add(self.open.index)
                out += self._close("completed" if isinstance(ev, ToolCallEnd) else "incomplete")
        return out

    def finish(self, incomplete: bool) -> list[Event]:
        """Close the open item (`incomplete` when the output was cut); an empty output gets an empty message."""
        out = self._close("incomplete" if incomplete else "completed")
        if not self.announced:
            out += self._open_text("message")
            out += self._close("incomplete" if incomplete else "completed")
        return out

    # ---- items ----

    def _is_call(self, index: int) -> bool:
        return self.open is not None and self.open.call == index

    def _kind(self) -> str | None:
        return None if self.open is None else str(self.open.item["type"])

    def _text(self, ev: ContentDelta | ReasoningDelta) -> list[Event]:
        kind = "message" if isinstance(ev, ContentDelta) else "reasoning"
        out = [] if self._kind() == kind else [*self._close("completed"), *self._open_text(kind)]
        assert self.open is not None
        self.open.item["content"][0]["text"] += ev.text
        name = "response.output_text.delta" if kind == "message" else "response.reasoning_text.delta"
        extra: dict[str, Any] = {"logprobs": []} if kind == "message" else {}
        out.append(self._ref(name, content_index=0, delta=ev.text, **extra))
        return out

    def _open_text(self, kind: str) -> list[Event]:
        item: dict[str, Any]
        if kind == "message":
            item = {"id": new_id("msg"), "type": "message", "status": "in_progress", "role": "assistant",
                    "content": []}
        else:
            item = {"id": new_id("rs"), "type": "reasoning", "summary": [], "content": [], "status": "in_progress"}
        out = self._add(item)
        part = _text_part(kind)
        out.append(self._ref("response.content_part.added", content_index=0, part=copy.deepcopy(part)))
        item["content"].append(part)
        return out

    def _add(self, item: dict[str, Any], call: int | None = None) -> list[Event]:
        self.open = _Open(len(self.announced), item, call)
        self.announced.append(item)
        return [{"type": "response.output_item.added", "output_index": self.open.index, "item": copy.deepcopy(item)}]

    def _close(self, status: str) -> list[Event]:
        if self.open is None:
            return []
        item, out = self.open.item, []
        if item["type"] == "function_call":
            out.append(self._ref("response.function_call_arguments.done", name=item["name"],
                                 arguments=item["arguments"]))
        else:
            part = item["content"][0]
            done = "response.output_text.done" if item["type"] == "message" else "response.reasoning_text.done"
            extra: dict[str, Any] = {"logprobs": []} if item["type"] == "message" else {}
            out.append(self._ref(done, content_index=0, text=part["text"], **extra))
            out.append(self._ref("response.content_part.done", content_index=0, part=copy.deepcopy(part)))
        item["status"] = status
        out.append({"type": "response.output_item.done", "output_index": self.open.index, "item": copy.deepcopy(item)})
        self.open = None
        return out

    def _ref(self, kind: str, **fields: Any) -> Event:
        """An event about the open item: `item_id` and `output_index`, then `fields`."""
        assert self.open is not None
        return {"type": kind, "item_id": self.open.item["id"], "output_index": self.open.index, **fields}


class ReasoningCounter:
    """`usage.output_tokens_details.reasoning_tokens`, from the tokens of each engine delta and the
    parser events it produced. A delta whose visible events are all reasoning text counts; one with
    visible answer text (or a tool call) does not, even if it also ends the reasoning; a delta with
    no visible text (markup such as `<think>` / `</think>`, held-back text) counts when the output
    was in reasoning before it or is in reasoning after it."""

    def __init__(self, starts_in_reasoning: bool) -> None:
        self.in_reasoning = starts_in_reasoning
        self.counted = 0
        self.pending = 0  # tokens of deltas without visible text since the last visible one

    @property
    def tokens(self) -> int:
        return self.counted + (self.pending if self.in_reasoning else 0)

    def count(self, n: int, events: Sequence[ParserEvent]) -> None:
        visible = [e for e in events if isinstance(e, (ContentDelta, ReasoningDelta, ToolCallStart,
                                                        ToolCallArgumentsDelta))]
        if not visible:
            self.pending += n
            return
        now = all(isinstance(e, ReasoningDelta) for e in visible)
        if now or self.in_reasoning:
            self.counted += self.pending
        self.counted += n if now else 0
        self.pending, self.in_reasoning = 0, now


class EventFramer:
    """The Responses SSE framing: `event: <type>` and `data: <json>` lines, `sequence_number` from 0
    on every event, no `[DONE]` line (the stream ends after `response.completed` / `.incomplete`, or
    after an `error` event)."""

    def __init__(self) -> None:
        self.next = 0

    def frame(self, event: Event) -> bytes:
        body = {**event, "sequence_number": self.next}
        self.next += 1
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        return f"event: {event['type']}\ndata: {data}\n\n".encode()

    def error(self, err: APIError) -> bytes:
        """An error after the 200 went out (`ResponseErrorEvent`)."""
        return self.frame({"type": "error", "code": err.code, "message": err.message, "param": err.param})
