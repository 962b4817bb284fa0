"""Request parsing and validation: 400 for non-JSON / unsupported parameters, 422 naming the field."""
from __future__ import annotations

import json

import pytest

from awqserve.entrypoints.openai.errors import APIError, context_length_exceeded
from awqserve.entrypoints.openai.protocol import (ChatCompletionRequest, CompletionRequest, format_loc, parse_body,
                                                  reject_unsupported)
from awqserve.entrypoints.openai.sampling import resolve_max_tokens

MSG = [{"role": "user", "content": "hi"}]


def _err(raw: bytes | str, model: type = ChatCompletionRequest) -> APIError:
    with pytest.raises(APIError) as info:
        parse_body(raw.encode() if isinstance(raw, str) else raw, model)
    return info.value


def test_valid_chat_request_keeps_fields() -> None:
    req = parse_body(json.dumps({"messages": MSG, "temperature": 0, "n": 2, "stop": "x",
                                 "stream_options": {"include_usage": True}}).encode(), ChatCompletionRequest)
    assert req.n == 2 and req.temperature == 0.0 and req.stop == "x" and req.include_usage


@pytest.mark.parametrize("raw", ["", "not json", "{\"messages\": [", b"\xff\xfe"])
def test_non_json_is_400(raw: str | bytes) -> None:
    err = _err(raw)
    assert err.status == 400 and err.code == "invalid_json"


@pytest.mark.parametrize("body, param", [
    ({"messages": MSG, "temperature": 3}, "temperature"),
    ({"messages": MSG, "temperature": "hot"}, "temperature"),
    ({"messages": MSG, "n": 0}, "n"),
    ({"messages": MSG, "top_p": 1.5}, "top_p"),
    ({"messages": MSG, "max_tokens": 0}, "max_tokens"),
    ({"messages": MSG, "stream": "yes"}, "stream"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": []}, "messages"),
    ({}, "messages"),
    ({"messages": MSG, "logit_bias": {"abc": 1}}, "logit_bias"),
    ({"messages": MSG, "logit_bias": {"5": 500}}, "logit_bias"),
    ({"messages": MSG, "presence_penalty": -3}, "presence_penalty"),
])
def test_schema_errors_are_422_naming_the_field(body: dict, param: str) -> None:
    err = _err(json.dumps(body))
    assert err.status == 422 and err.param == param
    assert err.body()["error"]["type"] == "invalid_request_error"


def test_body_must_be_an_object() -> None:
    err = _err("[1, 2]")
    assert err.status == 422 and "JSON object" in err.message


def test_completion_prompt_forms() -> None:
    for prompt in ["a", ["a", "b"], [1, 2], [[1], [2, 3]]]:
        assert parse_body(json.dumps({"prompt": prompt}).encode(), CompletionRequest).prompt == prompt
    assert _err(json.dumps({"prompt": [1, "a"]}), CompletionRequest).param == "prompt"


@pytest.mark.parametrize("field, value", [
    ("tools", [{"type": "function", "function": {"name": "f"}}]),
    ("tool_choice", "auto"),
    ("response_format", {"type": "json_object"}),
    ("functions", [{"name": "f"}]),
    ("frobnicate", 1),
])
def test_unsupported_parameters_are_400_naming_them(field: str, value: object) -> None:
    req = parse_body(json.dumps({"messages": MSG, field: value}).encode(), ChatCompletionRequest)
    with pytest.raises(APIError) as info:
        reject_unsupported(req)
    assert info.value.status == 400 and info.value.param == field and field in info.value.message


@pytest.mark.parametrize("field, value", [
    ("tools", None), ("tools", []), ("tool_choice", "none"), ("response_format", {"type": "text"}),
    ("parallel_tool_calls", True), ("store", False), ("metadata", {"a": "b"}), ("user", "u1"),
])
def test_harmless_values_are_accepted(field: str, value: object) -> None:
    reject_unsupported(parse_body(json.dumps({"messages": MSG, field: value}).encode(), ChatCompletionRequest))


def test_format_loc_drops_union_tags() -> None:
    assert format_loc(("messages", 0, "content", "list[ContentPart]", 1, "type")) == "messages[0].content[1].type"
    assert format_loc(()) is None


def test_context_length_messages() -> None:
    with pytest.raises(APIError) as info:
        resolve_max_tokens(100, 100, None, "messages")
    assert info.value.status == 400 and "maximum context length is 100 tokens" in info.value.message
    assert "shorten" in info.value.message
    with pytest.raises(APIError) as info:
        resolve_max_tokens(100, 60, 50, "messages")
    assert "maximum context length is 100 tokens" in info.value.message and "max_tokens" in info.value.message
    assert info.value.param == "max_tokens" and info.value.code == "context_length_exceeded"
    assert resolve_max_tokens(100, 60, None, "messages") == 40  # default: the remaining context
    assert resolve_max_tokens(100, 60, 40, "messages") == 40
    assert "lower max_tokens" in context_length_exceeded(10, 5, 9, "prompt").message
