"""The Responses API's pure parts: input items → chat messages, parser events → output items and
stream events, the bounded store, reasoning-token counting, the SSE framing."""
from __future__ import annotations

import json
from typing import Any

import pytest

from awqserve.entrypoints.openai.errors import APIError
from awqserve.entrypoints.openai.protocol_responses import TextFormat, parse_items, parse_tools
from awqserve.entrypoints.openai.responses_items import (chat_messages, chat_response_format, chat_tool_choice,
                                                         chat_tools, item_dicts)
from awqserve.entrypoints.openai.responses_output import EventFramer, OutputItems, ReasoningCounter
from awqserve.entrypoints.openai.responses_store import ResponseStore, StoredResponse
from awqserve.parsers import (ContentDelta, ReasoningDelta, ToolCallArgumentsDelta, ToolCallEnd, ToolCallInvalid,
                              ToolCallStart)

CALL = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}


def _messages(items: list[dict[str, Any]], instructions: str | None = None) -> list[dict[str, Any]]:
    return chat_messages(parse_items(items), instructions)


def test_messages_roles_parts_and_instructions() -> None:
    msgs = _messages([{"role": "developer", "content": "be terse"},
                      {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"},
                                                                       {"type": "input_text", "text": "b"}]},
                      {"role": "assistant", "content": [{"type": "output_text", "text": "c", "annotations": [],
                                                         "logprobs": []}], "id": "msg_1", "status": "completed"}],
                     instructions="sys")
    assert msgs == [{"role": "system", "content": "sys"}, {"role": "system", "content": "be terse"},
                    {"role": "user", "content": "a\nb"}, {"role": "assistant", "content": "c"}]


def test_calls_join_the_assistant_turn_and_outputs_become_tool_messages() -> None:
    second = {**CALL, "call_id": "call_2", "arguments": "{}"}
    msgs = _messages([{"role": "user", "content": "q"},
                      {"type": "reasoning", "id": "rs_1", "summary": [],
                       "content": [{"type": "reasoning_text", "text": "think"}]},
                      {"role": "assistant", "content": "let me check"}, CALL, second,
                      {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
                      {"type": "function_call_output", "call_id": "call_2",
                       "output": [{"type": "input_text", "text": "12:00"}]}])
    assert msgs[1] == {"role": "assistant", "content": "let me check", "reasoning_content": "think", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}
    assert msgs[2:] == [{"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                        {"role": "tool", "tool_call_id": "call_2", "content": "12:00"}]


def test_a_call_without_text_opens_its_own_assistant_turn() -> None:
    msgs = _messages([{"role": "user", "content": "q"}, CALL])
    assert msgs[1]["role"] == "assistant" and msgs[1]["content"] is None and len(msgs[1]["tool_calls"]) == 1


@pytest.mark.parametrize("items, status, param", [
    ([{"type": "function_call_output", "call_id": "call_9", "output": "x"}], 400, "input[0].call_id"),
    ([{**CALL, "arguments": "{not json"}], 400, "input[0].arguments"),
    ([{**CALL, "arguments": "[1]"}], 400, "input[0].arguments"),
    ([{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}], 400, "input[0].content[0].type"),
    ([{"type": "item_reference", "id": "msg_1"}], 400, "input[0].type"),
    ([{"type": "web_search_call", "id": "ws_1"}], 400, "input[0].type"),
    ([{"role": "assistant", "content": "x", "phase": "commentary"}], 400, "input[0].phase"),
    ([{"type": "reasoning", "summary": [], "encrypted_content": "gAAA"}], 400, "input[0].encrypted_content"),
    ([{"role": "robot", "content": "x"}], 422, "input[0].role"),
    ([{"type": "function_call", "name": "f", "arguments": "{}"}], 422, "input[0].call_id"),
    ([{"role": "user", "content": "x", "colour": "red"}], 422, "input[0].colour"),
    ([{"role": "user", "content": [{"type": "input_text"}]}], 422, "input[0].content[0]"),
    ([{"role": "user", "content": [{"text": "x"}]}], 422, "input[0].content[0].type"),
    (["just a string"], 422, "input[0]"),
    ([], 400, "input"),
])
def test_bad_items_name_the_field(items: list[Any], status: int, param: str) -> None:
    with pytest.raises(APIError) as e:
        _messages(items)
    assert (e.value.status, e.value.param) == (status, param), e.value.message


def test_history_items_are_named_after_previous_response_id() -> None:
    earlier = parse_items([{"role": "user", "content": "q"}], "previous_response_id")
    new = parse_items([{"type": "function_call_output", "call_id": "nope", "output": "x"}])
    with pytest.raises(APIError) as e:
        chat_messages([*earlier, *new], None, first=len(earlier))
    assert e.value.param == "input[0].call_id"


def test_stored_items_parse_again() -> None:
    items = parse_items([{"role": "user", "content": [{"type": "input_text", "text": "a"}]}, CALL])
    assert parse_items(item_dicts(items)) == items
    assert item_dicts("hi") == [{"type": "message", "role": "user", "content": "hi"}]


def test_tools_choice_and_format_translate_to_chat() -> None:
    tools = parse_tools([{"type": "function", "name": "f", "description": "d", "strict": True,
                          "parameters": {"type": "object"}}])
    assert chat_tools(tools) == [{"type": "function", "function": {"name": "f", "description": "d", "strict": True,
                                                                    "parameters": {"type": "object"}}}]
    assert chat_tool_choice({"type": "function", "name": "f"}) == {"type": "function", "function": {"name": "f"}}
    assert chat_tool_choice("required") == "required"
    js = TextFormat.model_validate({"type": "json_schema", "name": "p", "schema": {"type": "object"}, "strict": True})
    assert chat_response_format(js) == {"type": "json_schema",
                                        "json_schema": {"name": "p", "schema": {"type": "object"}, "strict": True}}
    assert chat_response_format(TextFormat.model_validate({"type": "json_object"})) == {"type": "json_object"}


@pytest.mark.parametrize("tool, param", [({"type": "web_search"}, "tools[0].type"),
                                         ({"type": "mcp", "server_label": "x"}, "tools[0].type"),
                                         ({"type": "function", "name": "f", "output_schema": {}},
                                          "tools[0].output_schema"),
                                         ({"type": "function"}, "tools[0].name")])
def test_unsupported_tools(tool: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as e:
        parse_tools([tool])
    assert e.value.param == param


@pytest.mark.parametrize("choice", [{"type": "allowed_tools", "mode": "auto", "tools": []},
                                    {"type": "web_search_preview"}, {"type": "mcp", "server_label": "x"}])
def test_unsupported_tool_choices(choice: dict[str, Any]) -> None:
    with pytest.raises(APIError) as e:
        chat_tool_choice(choice)
    assert e.value.status == 400 and e.value.param == "tool_choice.type"


# ---- output items ----

def test_output_items_and_their_events() -> None:
    out = OutputItems()
    events = out.feed([ReasoningDelta("hm"), ContentDelta("Hi"), ContentDelta("!"),
                       ToolCallStart(0, "call_a", "f"), ToolCallArgumentsDelta(0, '{"x":'),
                       ToolCallArgumentsDelta(0, " 1}"), ToolCallEnd(0)])
    events += out.finish(incomplete=False)
    kinds = [e["type"].removeprefix("response.") for e in events]
    assert kinds == ["output_item.added", "content_part.added", "reasoning_text.delta", "reasoning_text.done",
                     "content_part.done", "output_item.done",
                     "output_item.added", "content_part.added", "output_text.delta", "output_text.delta",
                     "output_text.done", "content_part.done", "output_item.done",
                     "output_item.added", "function_call_arguments.delta", "function_call_arguments.delta",
                     "function_call_arguments.done", "output_item.done"]
    reasoning, message, call = out.output
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "hm"}] and reasoning["summary"] == []
    assert message["content"][0]["text"] == "Hi!" and message["status"] == "completed"
    assert (call["call_id"], call["name"], call["arguments"]) == ("call_a", "f", '{"x": 1}')
    assert call["status"] == "completed"
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.done"] == [0, 1, 2]
    assert events[6]["item"]["content"] == [] and events[6]["item"]["status"] == "in_progress"  # a snapshot
    assert json.loads(events[-2]["arguments"]) == {"x": 1}


def test_invalid_call_is_closed_incomplete_and_left_out() -> None:
    out = OutputItems()
    events = out.feed([ToolCallStart(0, "call_a", "f"), ToolCallArgumentsDelta(0, '{"x"'), ToolCallInvalid(0),
                       ContentDelta('<tool_call>{"x"')])
    events += out.finish(incomplete=True)
    done = [e for e in events if e["type"] == "response.output_item.done"]
    assert [d["item"]["status"] for d in done] == ["incomplete", "incomplete"]
    assert [i["type"] for i in out.output] == ["message"] and done[1]["output_index"] == 1


def test_empty_output_is_one_empty_message() -> None:
    out = OutputItems()
    events = out.finish(incomplete=False)
    assert [i["content"][0]["text"] for i in out.output] == [""] and len(events) == 5


def test_reasoning_counter() -> None:
    c = ReasoningCounter(starts_in_reasoning=False)
    c.count(2, [])  # <think>: markup, before any text
    c.count(3, [ReasoningDelta("a")])
    c.count(1, [])  # part of </think>, held back
    assert c.tokens == 6
    c.count(2, [ReasoningDelta("b"), ContentDelta("c")])  # straddles the end: answer
    c.count(4, [ContentDelta("d")])
    c.count(1, [])  # trailing markup after the answer
    assert c.tokens == 6
    c = ReasoningCounter(starts_in_reasoning=True)  # the template opened the block
    c.count(5, [])
    c.count(2, [ToolCallStart(0, "call_a", "f")])
    assert c.tokens == 5


def test_framer_numbers_events_from_zero() -> None:
    f = EventFramer()
    a, b = f.frame({"type": "response.created"}), f.error(APIError(503, "gone", code="out_of_memory"))
    assert a.startswith(b"event: response.created\ndata: ") and a.endswith(b"\n\n")
    assert json.loads(a.split(b"data: ")[1])["sequence_number"] == 0
    assert json.loads(b.split(b"data: ")[1]) == {"type": "error", "code": "out_of_memory", "message": "gone",
                                                 "param": None, "sequence_number": 1}


# ---- store ----

def _entry(n: int) -> StoredResponse:
    return StoredResponse({"id": f"resp_{n}"}, ())


def test_store_is_lru_bounded() -> None:
    s = ResponseStore(2)
    s.put("a", _entry(1))
    s.put("b", _entry(2))
    assert s.get("a") is not None  # a is now the most recent
    s.put("c", _entry(3))
    assert "b" not in s and "a" in s and "c" in s and len(s) == 2
    assert s.delete("a") and not s.delete("a")


def test_disabled_store_keeps_nothing() -> None:
    s = ResponseStore(0)
    s.put("a", _entry(1))
    assert not s.enabled and len(s) == 0 and s.get("a") is None
    with pytest.raises(ValueError):
        ResponseStore(-1)
