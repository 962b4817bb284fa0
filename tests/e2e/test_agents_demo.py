"""Tools and structured outputs on the demo model, through the official SDK, as agents use them.

The 135M demo model knows no tools and no JSON; the constraint (llguidance, engine-side masks) is what
makes every answer parse and validate — which is exactly what these tests check: tool calls against
their `parameters` schemas, JSON answers against their schemas (jsonschema), choices and regexes
exactly. Schemas bound every string (maxLength / enum) so a rambling model still finishes in budget.
"""
from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import jsonschema
import pytest

from conftest import Schemas, sse_lines

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 20},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
                                       "required": ["zone"], "additionalProperties": False}}}
ASK = [{"role": "user", "content": "What's the weather in Paris? Use the tools."}]
PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 16}, "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "role": {"type": "string", "enum": ["engineer", "artist", "doctor"]}},
    "required": ["name", "age", "role"], "additionalProperties": False}
GREEDY: dict[str, Any] = {"temperature": 0, "max_tokens": 80}


def _schema_of(tool: dict[str, Any]) -> dict[str, Any]:
    return tool["function"]["parameters"]


def _check_calls(calls: Any, tools: list[dict[str, Any]]) -> None:
    by_name = {t["function"]["name"]: t for t in tools}
    assert calls
    for c in calls:
        assert c.type == "function" and c.id.startswith("call_")
        jsonschema.validate(json.loads(c.function.arguments), _schema_of(by_name[c.function.name]))


def test_required_tool_call_parses_and_validates(client: Any, model_name: str) -> None:
    r = client.chat.completions.create(model=model_name, messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
                                       parallel_tool_calls=False, **GREEDY)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    _check_calls(choice.message.tool_calls, [WEATHER, TIME])


def test_parallel_calls_all_validate(client: Any, model_name: str) -> None:
    """The demo model repeats calls until max_tokens: each complete one still validates, the cut one is
    not reported as a call, and the finish reason says the output was cut."""
    r = client.chat.completions.create(model=model_name, messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
                                       temperature=0, max_tokens=120)
    choice = r.choices[0]
    _check_calls(choice.message.tool_calls, [WEATHER, TIME])
    assert choice.finish_reason in ("tool_calls", "length")


def test_named_tool_call(client: Any, model_name: str) -> None:
    r = client.chat.completions.create(model=model_name, messages=ASK, tools=[WEATHER, TIME],
                                       tool_choice={"type": "function", "function": {"name": "get_time"}}, **GREEDY)
    calls = r.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_time"]
    _check_calls(calls, [TIME])


def test_parallel_tool_calls_false_gives_at_most_one_call(client: Any, model_name: str) -> None:
    r = client.chat.completions.create(model=model_name, messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
                                       parallel_tool_calls=False, **GREEDY)
    assert len(r.choices[0].message.tool_calls) == 1


def _stream(http: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200
        lines = sse_lines(r)
    assert lines[-1] == "[DONE]"
    return [json.loads(x) for x in lines[:-1]]


def test_tool_call_stream_equals_non_stream(client: Any, http: httpx.Client, schemas: Schemas, model_name: str) -> None:
    body = {"model": model_name, "messages": ASK, "tools": [WEATHER], "tool_choice": "required",
            "parallel_tool_calls": False, **GREEDY}
    raw = client.chat.completions.with_raw_response.create(**body)
    schemas.validate("CreateChatCompletionResponse", json.loads(raw.http_response.text))
    full = raw.parse().choices[0].message.tool_calls
    chunks = _stream(http, body)
    for c in chunks:
        schemas.validate("CreateChatCompletionStreamResponse", c)
    calls: dict[int, dict[str, str]] = {}
    for c in chunks:
        for tc in (c["choices"][0]["delta"].get("tool_calls") or []) if c["choices"] else []:
            slot = calls.setdefault(tc["index"], {"name": "", "arguments": ""})
            if "id" in tc:  # id, type and name come once, in the call's first delta
                assert tc["type"] == "function" and not slot["name"]
                slot["name"] = tc["function"]["name"]
            slot["arguments"] += tc["function"].get("arguments", "")
    assert [(v["name"], json.loads(v["arguments"])) for _, v in sorted(calls.items())] == \
           [(t.function.name, json.loads(t.function.arguments)) for t in full]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_json_schema_for_n2_and_in_streams(client: Any, http: httpx.Client, model_name: str) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    msgs = [{"role": "user", "content": "Describe a fictional person as JSON."}]
    r = client.chat.completions.create(model=model_name, messages=msgs, response_format=fmt, n=2, temperature=0.8,
                                       seed=3, max_tokens=80)
    assert len(r.choices) == 2
    for ch in r.choices:
        assert ch.finish_reason == "stop"
        jsonschema.validate(json.loads(ch.message.content), PERSON)
    chunks = _stream(http, {"model": model_name, "messages": msgs, "response_format": fmt, **GREEDY})
    text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"])
    jsonschema.validate(json.loads(text), PERSON)


def test_concurrent_requests_with_different_schemas(client: Any, model_name: str) -> None:
    schemas = [{"type": "object", "properties": {f"k{i}": {"type": "integer", "minimum": i, "maximum": i + 9}},
                "required": [f"k{i}"], "additionalProperties": False} for i in range(8)]

    def one(schema: dict[str, Any]) -> tuple[dict[str, Any], str]:
        r = client.chat.completions.create(
            model=model_name, messages=[{"role": "user", "content": "Give me a number."}], max_tokens=40,
            temperature=0, response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}})
        return schema, r.choices[0].message.content

    with ThreadPoolExecutor(8) as pool:
        for schema, content in pool.map(one, schemas):
            jsonschema.validate(json.loads(content), schema)


@pytest.mark.parametrize("field", ["structured_outputs", "guided"])
def test_choice_and_regex_match_exactly(client: Any, model_name: str, field: str) -> None:
    msgs = [{"role": "user", "content": "Is the sky blue?"}]
    choice = {"structured_outputs": {"choice": ["yes", "no", "maybe"]}} if field == "structured_outputs" \
        else {"guided_choice": ["yes", "no", "maybe"]}
    r = client.chat.completions.create(model=model_name, messages=msgs, extra_body=choice, **GREEDY)
    assert r.choices[0].message.content in ("yes", "no", "maybe") and r.choices[0].finish_reason == "stop"
    pattern = r"[0-9]{3}-[A-Z]{2}"
    regex = {"structured_outputs": {"regex": pattern}} if field == "structured_outputs" else {"guided_regex": pattern}
    r = client.completions.create(model=model_name, prompt="Code:", extra_body=regex, **GREEDY)
    assert re.fullmatch(pattern, r.choices[0].text)


def test_json_object_and_length_cut(client: Any, model_name: str) -> None:
    msgs = [{"role": "user", "content": "Any JSON object please."}]
    r = client.chat.completions.create(model=model_name, messages=msgs, response_format={"type": "json_object"},
                                       temperature=0, max_tokens=3)
    assert r.choices[0].finish_reason == "length"  # cut mid-value: "length", never a "stop" with half a JSON


def test_auto_tools_two_turns_with_history(client: Any, model_name: str) -> None:
    first = client.chat.completions.create(model=model_name, messages=ASK, tools=[WEATHER], tool_choice="required",
                                           parallel_tool_calls=False, **GREEDY)
    call = first.choices[0].message.tool_calls[0]
    history = ASK + [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                     {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp_c": 18})}]
    second = client.chat.completions.create(model=model_name, messages=history, tools=[WEATHER], tool_choice="auto",
                                            **GREEDY)
    ch = second.choices[0]
    assert ch.finish_reason in ("stop", "tool_calls", "length")
    if ch.message.tool_calls:
        _check_calls(ch.message.tool_calls, [WEATHER])


@pytest.mark.parametrize("body, param", [
    ({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}, "messages[0].tool_call_id"),
    ({"messages": ASK + [{"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {
        "name": "get_weather", "arguments": "{not json"}}]}]}, "messages[1].tool_calls[0].function.arguments"),
    ({"messages": ASK, "tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice.function.name"),
    ({"messages": ASK, "tools": [WEATHER, WEATHER]}, "tools"),
])
def test_malformed_tools_and_history_are_400(http: httpx.Client, model_name: str, body: dict[str, Any],
                                             param: str) -> None:
    r = http.post("/v1/chat/completions", json={"model": model_name, **body})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
