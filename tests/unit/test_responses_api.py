"""POST /v1/responses over real sockets on the fake engine: text, streams, tools, reasoning.

Bodies and stream events are validated against OpenAI's OpenAPI document (skipped when absent).
`script` (_responses_harness.py) makes greedy output spell a given text once and stop, so tool calls,
reasoning and `status: "completed"` are reachable.
"""
from __future__ import annotations

import json
import time
from typing import Any

import httpx

from awqserve.entrypoints.openai.server_config import ServerConfig
from server_harness import RunningServer, run_server
from _responses_harness import (CALL_TEXT, ENGINE, GREEDY, PHRASE, WEATHER, Schemas, assert_error,  # noqa: F401
                               chat_prompt_tokens, client, create, events, schemas, script, sdk, srv, text_of)


# ---- text ----

def test_text_completed_with_exact_usage(client: httpx.Client, schemas: Schemas, script: Any) -> None:
    script("Paris.")
    body = create(client, {"input": "Capital of France?", "instructions": "Be brief.", **GREEDY}, schemas)
    assert body["status"] == "completed" and body["incomplete_details"] is None and body["id"].startswith("resp_")
    [item] = body["output"]
    assert item["type"] == "message" and item["id"].startswith("msg_") and item["status"] == "completed"
    assert text_of(body) == "Paris." and body["instructions"] == "Be brief."
    prompt = chat_prompt_tokens(client, [{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": "Capital of France?"}])
    assert body["usage"] == {"input_tokens": prompt,
                             "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0}, "output_tokens": 6, "output_tokens_details": {"reasoning_tokens": 0},
                             "total_tokens": prompt + 6}


def test_cut_by_max_output_tokens_is_incomplete(client: httpx.Client, schemas: Schemas) -> None:
    body = create(client, {"input": "hi", "temperature": 0, "max_output_tokens": 16}, schemas)
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert text_of(body) == PHRASE[:16] and body["output"][0]["status"] == "incomplete"
    assert body["usage"]["output_tokens"] == 16 and body["completed_at"] is None


def test_sdk_text_and_echoed_fields(sdk: Any, script: Any) -> None:
    script("Hello there")
    r = sdk.responses.create(input=[{"role": "user", "content": "hi"}], temperature=0, max_output_tokens=32,
                             metadata={"k": "v"}, user="u1")
    assert r.status == "completed" and r.output_text == "Hello there" and r.metadata == {"k": "v"}
    assert r.usage.output_tokens == 11 and r.text.format.type == "text" and r.tool_choice == "auto"


# ---- stream ----

def test_stream_events_order_numbers_and_schemas(client: httpx.Client, schemas: Schemas) -> None:
    evs = events(client, {"input": "hi", "temperature": 0, "max_output_tokens": 16})
    assert [e["sequence_number"] for e in evs] == list(range(len(evs)))
    for e in evs:
        schemas.event(e)
    kinds = [e["type"] for e in evs]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.incomplete"]
    final = evs[-1]["response"]
    deltas = "".join(e["delta"] for e in evs if e["type"] == "response.output_text.delta")
    assert deltas == text_of(final) == PHRASE[:16] and final["usage"]["output_tokens"] == 16
    assert evs[0]["response"]["status"] == "in_progress" and evs[0]["response"]["id"] == final["id"]


def test_stream_equals_non_stream(client: httpx.Client, script: Any) -> None:
    script(f"Sure. {CALL_TEXT}")
    body = {"input": "weather?", "tools": [WEATHER], **GREEDY}
    full = create(client, body)
    evs = events(client, body)
    final = evs[-1]["response"]
    assert evs[-1]["type"] == "response.completed"
    strip = [{k: v for k, v in item.items() if k not in ("id", "call_id")} for item in final["output"]]
    assert strip == [{k: v for k, v in item.items() if k not in ("id", "call_id")} for item in full["output"]]
    assert final["usage"] == full["usage"]
    added = [e["item"]["id"] for e in evs if e["type"] == "response.output_item.added"]
    assert added == [item["id"] for item in final["output"]]


def test_sdk_stream_helper_accumulates(sdk: Any, script: Any) -> None:
    script("Streaming works.")
    with sdk.responses.stream(model="/fake/fake-awq-model", input="hi", temperature=0, max_output_tokens=32) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert final.output_text == "Streaming works." and kinds[-1] == "response.completed"
    raw = sdk.responses.create(input="hi", temperature=0, max_output_tokens=32, stream=True)
    assert "".join(e.delta for e in raw if e.type == "response.output_text.delta") == "Streaming works."


def test_stream_error_event_after_start(client: httpx.Client, schemas: Schemas) -> None:
    evs = events(client, {"input": "__oom__", "temperature": 0, "max_output_tokens": 16})
    assert evs[-1]["type"] == "error" and evs[-1]["code"] == "out_of_memory"
    schemas.event(evs[-1])
    assert [e["sequence_number"] for e in evs] == list(range(len(evs)))


def test_disconnect_aborts_the_engine_request(srv: RunningServer, client: httpx.Client) -> None:
    with client.stream("POST", "/v1/responses", json={"input": "hi", "temperature": 0, "max_output_tokens": 1000,
                                                       "stream": True}) as r:
        lines = r.iter_lines()
        created = json.loads(next(x for x in lines if x.startswith("data: "))[len("data: "):])
        next(x for x in lines if "output_text.delta" in x)
    rid = created["response"]["id"]
    deadline = time.monotonic() + 5
    while rid not in srv.engine.aborts and time.monotonic() < deadline:
        time.sleep(0.02)
    assert rid in srv.engine.aborts


# ---- tools ----

def test_tool_call_item_and_second_turn(client: httpx.Client, schemas: Schemas, script: Any) -> None:
    script(CALL_TEXT)
    first = create(client, {"input": "Weather in Paris?", "tools": [WEATHER], "tool_choice": "required",
                            "parallel_tool_calls": False, **GREEDY}, schemas)
    [call] = first["output"]
    assert call["type"] == "function_call" and call["id"].startswith("fc_") and call["call_id"].startswith("call_")
    assert (call["name"], json.loads(call["arguments"]), call["status"]) == ("get_weather", {"city": "Paris"},
                                                                           "completed")
    assert first["status"] == "completed" and first["tools"][0]["name"] == "get_weather"
    script("It is sunny.")
    follow = [{"role": "user", "content": "Weather in Paris?"}, call,
              {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny, 21 C"}]
    second = create(client, {"input": follow, "tools": [WEATHER], "store": False, **GREEDY}, schemas)
    assert text_of(second) == "It is sunny." and second["store"] is False
    chat_tools = [{"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}]
    prompt = chat_prompt_tokens(client, [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": call["call_id"], "type": "function", "function": {
            "name": "get_weather", "arguments": call["arguments"]}}]},
        {"role": "tool", "tool_call_id": call["call_id"], "content": "sunny, 21 C"}], tools=chat_tools)
    assert second["usage"]["input_tokens"] == prompt


def test_stream_function_call_events(client: httpx.Client, schemas: Schemas, script: Any) -> None:
    script(CALL_TEXT)
    evs = events(client, {"input": "Weather?", "tools": [WEATHER], "tool_choice": {"type": "function",
                                                                                  "name": "get_weather"}, **GREEDY})
    for e in evs:
        schemas.event(e)
    args = "".join(e["delta"] for e in evs if e["type"] == "response.function_call_arguments.delta")
    done = next(e for e in evs if e["type"] == "response.function_call_arguments.done")
    assert json.loads(args) == {"city": "Paris"} and done["arguments"] == args and done["name"] == "get_weather"
    assert evs[-1]["response"]["tool_choice"] == {"type": "function", "name": "get_weather"}


def test_json_schema_format_compiles_and_bad_schema_names_text_format(client: httpx.Client, script: Any) -> None:
    script('{"a": 1}')
    fmt = {"type": "json_schema", "name": "obj", "strict": True,
           "schema": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}
    body = create(client, {"input": "json", "text": {"format": fmt}, **GREEDY})
    assert json.loads(text_of(body)) == {"a": 1} and body["text"]["format"]["name"] == "obj"
    bad = {**fmt, "schema": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}
    assert_error(client.post("/v1/responses", json={"input": "x", "text": {"format": bad}}), 400, "text.format")


# ---- reasoning ----

def test_reasoning_item_tokens_and_round_trip(schemas: Schemas, script: Any) -> None:
    script("<think>\nShort thought.\n</think>\n\nParis.")
    with run_server(ServerConfig(reasoning_parser="qwen3"), ENGINE, step_delay=0.001) as s, s.client() as c:
        body = create(c, {"input": "Capital?", **GREEDY}, schemas)
        evs = events(c, {"input": "Capital?", **GREEDY})
        script("Rome.")
        again = create(c, {"input": [{"role": "user", "content": "Capital?"}, *body["output"],
                                     {"role": "user", "content": "And Italy?"}], **GREEDY}, schemas)
    reasoning, message = body["output"]
    assert reasoning["type"] == "reasoning" and reasoning["id"].startswith("rs_")
    assert reasoning["content"][0]["text"].strip() == "Short thought." and text_of(body) == "Paris."
    usage = body["usage"]  # byte-level tokens: the whole <think> block is reasoning, "Paris." is not
    assert (usage["output_tokens"], usage["output_tokens_details"]["reasoning_tokens"]) == (39, 33)
    assert "response.reasoning_text.delta" in {e["type"] for e in evs}
    for e in evs:
        schemas.event(e)
    assert text_of(again) == "Rome."
