"""Responses items ↔ chat: input items → chat messages, Responses tools/options → chat's, and parser
events → output items with the stream events that build them. Pure functions: no engine, no HTTP.

Input mapping (a conversation is the stored items of `previous_response_id`, then the request's):
- `instructions` → a leading system message (they are never carried over from a previous response);
- `message` items → messages (`developer` → `system`; text parts joined by newlines);
- `function_call` items → `tool_calls` of an assistant message (joined onto the assistant message
  right before them, which is how the chat template expects one turn with text and calls);
- `function_call_output` items → `tool` messages whose `tool_call_id` answers an earlier call;
- `reasoning` items → `reasoning_content` of the assistant message that follows (the template
  decides whether the model sees it); one followed by no assistant message or call is dropped.
"""
from __future__ import annotations

import json
import uuid
from typing import Any, Sequence

from awqserve.entrypoints.openai.errors import APIError, bad_request, unsupported_parameter
from awqserve.entrypoints.openai.protocol_responses import (ContentPart, FunctionCallItem, FunctionCallOutputItem,
                                                            FunctionTool, InputItem, MessageItem, ReasoningInputItem,
                                                            TextFormat)


def new_id(prefix: str) -> str:
    """`resp_`, `msg_`, `fc_`, `rs_` + 32 hex digits."""
    return f"{prefix}_{uuid.uuid4().hex}"


def _text(content: str | Sequence[ContentPart]) -> str:
    return content if isinstance(content, str) else "\n".join(p.value for p in content)


class _Conversation:
    """Builds chat message dicts item by item; `first` is the index of the first item of this request
    (earlier items came from `previous_response_id`), so errors name `input[i]` as the client sent it."""

    def __init__(self, instructions: str | None, first: int) -> None:
        self.messages: list[dict[str, Any]] = [] if instructions is None else [
            {"role": "system", "content": instructions}]
        self.first = first
        self.calls: set[str] = set()
        self.reasoning: list[str] = []

    def where(self, i: int) -> str:
        return f"input[{i - self.first}]" if i >= self.first else "previous_response_id"

    def assistant(self, content: str | None, *, join: bool) -> dict[str, Any]:
        """The assistant message to add to: the last one when `join` allows, else a new one (taking
        any pending reasoning)."""
        last = self.messages[-1] if self.messages else None
        if join and last is not None and last["role"] == "assistant":
            return last
        msg: dict[str, Any] = {"role": "assistant", "content": content}
        if self.reasoning:
            msg["reasoning_content"] = "\n".join(self.reasoning)
            self.reasoning = []
        self.messages.append(msg)
        return msg

    def add(self, i: int, item: InputItem) -> None:
        if isinstance(item, MessageItem):
            if item.role == "assistant":
                self.assistant(_text(item.content), join=False)
            else:
                self.reasoning = []
                self.messages.append({"role": "system" if item.role == "developer" else item.role,
                                      "content": _text(item.content)})
        elif isinstance(item, FunctionCallItem):
            self.call(i, item)
        elif isinstance(item, FunctionCallOutputItem):
            if item.call_id not in self.calls:
                raise bad_request(f"{self.where(i)}.call_id {item.call_id!r} answers no earlier function_call item.",
                                  param=f"{self.where(i)}.call_id", code="invalid_value")
            self.reasoning = []
            self.messages.append({"role": "tool", "tool_call_id": item.call_id, "content": _text(item.output)})
        elif isinstance(item, ReasoningInputItem):
            self.reasoning.append(item.text)

    def call(self, i: int, item: FunctionCallItem) -> None:
        try:
            args = json.loads(item.arguments) if item.arguments.strip() else {}
        except json.JSONDecodeError as e:
            raise bad_request(f"{self.where(i)}.arguments is not valid JSON: {e.msg}.",
                              param=f"{self.where(i)}.arguments", code="invalid_value") from None
        if not isinstance(args, dict):
            raise bad_request(f"{self.where(i)}.arguments must be a JSON object.", param=f"{self.where(i)}.arguments",
                              code="invalid_value")
        msg = self.assistant(None, join=True)
        msg.setdefault("tool_calls", []).append(
            {"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.arguments}})
        self.calls.add(item.call_id)


def chat_messages(items: Sequence[InputItem], instructions: str | None, first: int = 0) -> list[dict[str, Any]]:
    """The chat messages of a conversation (module docstring); 400s name `input[i]` from `first` on."""
    conv = _Conversation(instructions, first)
    for i, item in enumerate(items):
        conv.add(i, item)
    if not conv.messages:
        raise bad_request("The input is empty: send a string or at least one item.", param="input",
                          code="invalid_value")
    return conv.messages


def chat_tools(tools: Sequence[FunctionTool]) -> list[dict[str, Any]]:
    """Flat Responses function tools → chat's `{"type": "function", "function": {...}}`."""
    return [{"type": "function", "function": t.model_dump(include={"name", "description", "parameters", "strict"},
                                                          exclude_none=True)} for t in tools]


def chat_tool_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    """`"none"|"auto"|"required"` or `{"type": "function", "name"}` → chat's; other forms are 400s."""
    if choice is None or isinstance(choice, str):
        if choice not in (None, "none", "auto", "required"):
            raise APIError(422, f"Invalid value for 'tool_choice': {choice!r} is not one of 'none', 'auto', "
                           "'required'.", param="tool_choice", code="invalid_value")
        return choice
    kind = choice.get("type")
    if kind != "function":
        raise unsupported_parameter("tool_choice.type", f"Only function tool choices are supported, got {kind!r}.")
    name = choice.get("name")
    if not isinstance(name, str) or set(choice) != {"type", "name"}:
        raise APIError(422, "Invalid value for 'tool_choice': a function choice is {\"type\": \"function\", "
                       "\"name\": <function name>}.", param="tool_choice", code="invalid_value")
    return {"type": "function", "function": {"name": name}}


def chat_response_format(fmt: TextFormat | None) -> dict[str, Any] | None:
    """`text.format` → chat's `response_format` (json_schema nests its fields under `json_schema`)."""
    if fmt is None or fmt.type != "json_schema":
        return None if fmt is None else {"type": fmt.type}
    inner = {"name": fmt.name, "schema": fmt.schema_, "strict": fmt.strict, "description": fmt.description}
    return {"type": "json_schema", "json_schema": {k: v for k, v in inner.items() if v is not None}}


def format_echo(fmt: TextFormat | None) -> dict[str, Any]:
    """The `text` object a response reports."""
    if fmt is None:
        return {"format": {"type": "text"}}
    return {"format": fmt.model_dump(by_alias=True, exclude_none=True)}


def tools_echo(tools: Sequence[FunctionTool]) -> list[dict[str, Any]]:
    """Tools as a response reports them (`strict` and `parameters` always present; calls are always
    constrained to the parameters here, so `strict` defaults to true)."""
    out = []
    for t in tools:
        tool: dict[str, Any] = {"type": "function", "name": t.name, "parameters": t.parameters,
                                "strict": True if t.strict is None else t.strict}
        if t.description is not None:
            tool["description"] = t.description
        out.append(tool)
    return out


def item_dicts(text_or_items: str | Sequence[InputItem]) -> list[dict[str, Any]]:
    """A request's input as stored item dicts (a string is one user message)."""
    if isinstance(text_or_items, str):
        return [{"type": "message", "role": "user", "content": text_or_items}]
    return [it.model_dump(by_alias=True, exclude_none=True) for it in text_or_items]
