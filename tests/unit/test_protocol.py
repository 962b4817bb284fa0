"""Request parsing and validation: 400 for non-JSON / unsupported parameters, 422 naming the field."""
from __future__ import annotations

import json

import pytest

from awqserve.entrypoints.openai.errors import APIError, context_length_exceeded
from awqserve.entrypoints.openai.protocol import (ChatCompletionRequest, CompletionRequest, format_loc, parse_body,
                                                  reject_unsupported)
from awqserve.engine.input_processor import InputProcessor
from awqserve.engine.sampling_params import SamplingParams
from awqserve.entrypoints.openai.serving_base import check_with_engine

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
    ("functions", [{"name": "f"}]),
    ("function_call", "auto"),
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


def test_agent_fields_are_typed_not_extras() -> None:
    """tools / tool_choice / response_format / structured outputs are fields: nothing lands in extras."""
    body = {"messages": MSG, "tools": [{"type": "function", "function": {"name": "f", "strict": True}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}}, "parallel_tool_calls": False,
            "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {}, "strict": True}},
            "structured_outputs": {"regex": "a+"}, "guided_json": {"type": "object"}, "guided_choice": ["a"],
            "guided_regex": "b", "guided_grammar": "start: \"a\"", "chat_template_kwargs": {"enable_thinking": False}}
    req = parse_body(json.dumps(body).encode(), ChatCompletionRequest)
    assert not req.model_extra and req.tools and req.tools[0].function.strict is True
    assert req.response_format is not None and req.response_format.json_schema is not None
    assert req.response_format.json_schema.schema_ == {} and req.structured_outputs is not None


@pytest.mark.parametrize("body, param", [
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ({"structured_outputs": {"jsonn": {}}}, "structured_outputs.jsonn"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "1", "function": {"name": "f"}}]}]},
     "messages[0].tool_calls[0].function.arguments"),
])
def test_malformed_agent_fields_are_422_naming_them(body: dict[str, object], param: str) -> None:
    err = _err(json.dumps({"messages": MSG, **body}))
    assert err.status == 422 and err.param == param


def test_format_loc_drops_union_tags() -> None:
    assert format_loc(("messages", 0, "content", "list[ContentPart]", 1, "type")) == "messages[0].content[1].type"
    assert format_loc(()) is None


class _Engine:
    """Only what check_with_engine uses of an EngineClient: the engine's own validation."""

    def __init__(self, max_len: int) -> None:
        self.inputs = InputProcessor(max_model_len=max_len, vocab_size=1000, max_logprobs=5, eos_token_ids=())

    def check_request(self, prompt: list[int], params: SamplingParams) -> None:
        self.inputs.validate(prompt, params)


def _check(max_len: int, prompt_len: int, max_tokens: int | None, **params: object) -> None:
    check_with_engine(_Engine(max_len), [1] * prompt_len, SamplingParams(max_tokens=max_tokens, **params),  # type: ignore[arg-type]
                      prompt_param="messages", renames={"logprobs": "top_logprobs"})


def test_context_length_messages() -> None:
    """The engine decides (InputProcessor); the endpoint words it the way clients match on."""
    with pytest.raises(APIError) as info:
        _check(100, 100, None)
    assert info.value.status == 400 and "maximum context length is 100 tokens" in info.value.message
    assert "shorten" in info.value.message and info.value.param == "messages"
    with pytest.raises(APIError) as info:
        _check(100, 60, 50)
    assert "maximum context length is 100 tokens" in info.value.message and "max_tokens" in info.value.message
    assert info.value.param == "max_tokens" and info.value.code == "context_length_exceeded"
    _check(100, 60, None)  # default: the remaining context
    _check(100, 60, 40)
    assert "lower max_tokens" in context_length_exceeded(10, 5, 9, "prompt").message
    assert InputProcessor(max_model_len=100, vocab_size=10, max_logprobs=5, eos_token_ids=()).max_tokens(
        60, SamplingParams(max_tokens=None)) == 40


def test_engine_limits_use_the_endpoints_field_names() -> None:
    with pytest.raises(APIError) as info:
        _check(100, 10, 5, logprobs=6)
    assert info.value.param == "top_logprobs" and info.value.message.startswith("top_logprobs=6 exceeds")
    assert "(--max-logprobs)" in info.value.message
    with pytest.raises(APIError) as info:
        check_with_engine(_Engine(100), [1, 5000], SamplingParams(), prompt_param="prompt")  # type: ignore[arg-type]
    assert info.value.param == "prompt" and "outside the vocabulary (0..999)" in info.value.message
