"""POST /v1/responses (and GET/DELETE of stored responses) over real sockets on the fake engine.

Bodies and stream events are validated against OpenAI's OpenAPI document (skipped when absent).
`script` makes greedy output spell a given text once and stop (the fake's default repeats its phrase
until the token limit), so tool calls, reasoning and `status: "completed"` are reachable.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

import fake_engine
from awqserve.config.engine_config import EngineConfig
from awqserve.engine.outputs import CompletionOutput
from awqserve.entrypoints.openai.server_config import ServerConfig
from fake_engine import PHRASE
from server_harness import RunningServer, run_server

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = Path(os.environ.get("AWQSERVE_OPENAPI", ROOT.parent / "shared" / "openai-openapi" / "openapi.yaml"))
ENGINE = EngineConfig(max_model_len=2048, max_num_seqs=8)
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city.", "strict": True,
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
CALL_TEXT = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
GREEDY: dict[str, Any] = {"temperature": 0, "max_output_tokens": 128}


class _OnceSample(fake_engine._Sample):
    """Spells the phrase once, then stops."""

    def step(self) -> CompletionOutput:
        out = super().step()
        if out.finish_reason is None and len(self.ids) >= len(self.phrase):
            self.finish = "stop"
            return dataclasses.replace(out, finish_reason="stop")
        return out


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    def use(text: str) -> None:
        monkeypatch.setattr(fake_engine, "PHRASE", text)
        monkeypatch.setattr(fake_engine, "_Sample", _OnceSample)
    return use


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    with run_server(ServerConfig(), ENGINE, step_delay=0.002) as s:
        yield s


@pytest.fixture(scope="module")
def client(srv: RunningServer) -> Iterator[httpx.Client]:
    with srv.client() as c:
        yield c


@pytest.fixture(scope="module")
def sdk(srv: RunningServer) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=30)


class Schemas:
    def __init__(self, components: dict[str, Any]) -> None:
        self.components = components
        names = [ref["$ref"].split("/")[-1] for ref in components["ResponseStreamEvent"]["anyOf"]]
        self.events = {components[n]["properties"]["type"]["enum"][0]: n for n in names}  # event type → schema

    def validate(self, name: str, body: Any) -> None:
        import jsonschema

        schema = {"$ref": f"#/components/schemas/{name}", "components": {"schemas": self.components}}
        jsonschema.Draft202012Validator(schema).validate(body)

    def event(self, ev: dict[str, Any]) -> None:
        self.validate(self.events[ev["type"]], ev)


def _nullable_to_anyof(node: Any) -> Any:
    if isinstance(node, list):
        return [_nullable_to_anyof(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable_to_anyof(v) for k, v in node.items() if k != "nullable"}
    return {"anyOf": [out, {"type": "null"}]} if node.get("nullable") is True else out


@pytest.fixture(scope="module")
def schemas() -> Schemas:
    if not OPENAPI.is_file():
        pytest.skip(f"OpenAI OpenAPI document not found at {OPENAPI}")
    import yaml

    doc = yaml.load(OPENAPI.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return Schemas(_nullable_to_anyof(doc["components"]["schemas"]))


def create(client: httpx.Client, body: dict[str, Any], schemas: Schemas | None = None) -> dict[str, Any]:
    if schemas is not None:
        schemas.validate("CreateResponse", body)
    r = client.post("/v1/responses", json=body)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    if schemas is not None:
        schemas.validate("Response", out)
    return out


def events(client: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of a streamed response, checking the `event:` line names each one."""
    out, name = [], None
    with client.stream("POST", "/v1/responses", json={**body, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.read()
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                out.append(json.loads(line[len("data: "):]))
                assert out[-1]["type"] == name
    return out


def text_of(body: dict[str, Any]) -> str:
    return "".join(c["text"] for item in body["output"] if item["type"] == "message" for c in item["content"])


def chat_prompt_tokens(client: httpx.Client, messages: list[dict[str, Any]], **kw: Any) -> int:
    """What the chat endpoint counts for the same conversation (the Responses API must agree)."""
    r = client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 1, **kw})
    assert r.status_code == 200, r.text
    return int(r.json()["usage"]["prompt_tokens"])


def assert_error(r: httpx.Response, status: int, param: str | None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err: dict[str, Any] = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["param"] == param, err
    return err


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


# ---- store ----

def test_previous_response_id_continues_without_instructions(client: httpx.Client, sdk: Any, script: Any) -> None:
    script("Paris.")
    first = create(client, {"input": "Capital of France?", "instructions": "Be brief.", **GREEDY})
    script("Rome.")
    second = create(client, {"input": "And Italy?", "previous_response_id": first["id"], **GREEDY})
    assert second["previous_response_id"] == first["id"] and second["instructions"] is None
    prompt = chat_prompt_tokens(client, [{"role": "user", "content": "Capital of France?"},
                                         {"role": "assistant", "content": "Paris."},
                                         {"role": "user", "content": "And Italy?"}])
    assert second["usage"]["input_tokens"] == prompt
    assert sdk.responses.retrieve(second["id"]).output_text == "Rome."
    assert client.get(f"/v1/responses/{first['id']}").json() == first


def test_delete_then_gone(client: httpx.Client, sdk: Any) -> None:
    body = create(client, {"input": "hi", "temperature": 0, "max_output_tokens": 4})
    r = client.delete(f"/v1/responses/{body['id']}")
    assert r.status_code == 200 and r.json() == {"id": body["id"], "object": "response", "deleted": True}
    assert_error(client.get(f"/v1/responses/{body['id']}"), 404, "response_id")
    assert_error(client.delete(f"/v1/responses/{body['id']}"), 404, "response_id")
    err = assert_error(client.post("/v1/responses", json={"input": "x", "previous_response_id": body["id"]}), 400,
                       "previous_response_id")
    assert err["code"] == "previous_response_not_found"
    sdk.responses.delete(create(client, {"input": "hi", "max_output_tokens": 2})["id"])  # the SDK's call works


def test_store_false_keeps_nothing(client: httpx.Client) -> None:
    body = create(client, {"input": "hi", "max_output_tokens": 2, "store": False})
    assert body["store"] is False
    assert_error(client.get(f"/v1/responses/{body['id']}"), 404, "response_id")


def test_stateless_server_refuses_previous_response_id() -> None:
    with run_server(ServerConfig(responses_store_size=0), ENGINE) as s, s.client() as c:
        body = create(c, {"input": "hi", "max_output_tokens": 2})
        err = assert_error(c.post("/v1/responses", json={"input": "x", "previous_response_id": body["id"]}), 400,
                           "previous_response_id")
        missing = assert_error(c.get(f"/v1/responses/{body['id']}"), 404, "response_id")
    assert body["store"] is False and "--responses-store-size" in err["message"]
    assert "--responses-store-size 0" in missing["message"]


# ---- refusals and validation ----

@pytest.mark.parametrize("extra, param", [
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"tools": [{"type": "file_search", "vector_store_ids": []}]}, "tools[0].type"),
    ({"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}, "tools[0].type"),
    ({"background": True}, "background"),
    ({"include": ["message.output_text.logprobs"]}, "include"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"truncation": "auto"}, "truncation"),
    ({"reasoning": {"effort": "high"}}, "reasoning"),
    ({"reasoning": {"summary": "auto"}}, "reasoning"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"service_tier": "flex"}, "service_tier"),
    ({"text": {"verbosity": "high"}}, "text.verbosity"),
    ({"tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": []}, "tools": [WEATHER]}, "tool_choice.type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x"}]}]},
     "input[0].content[0].type"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": [{"type": "input_file", "file_id": "f"}]}]},
     "input[0].output[0].type"),
    ({"frobnicate": 1}, "frobnicate"),
])
def test_unsupported_fields_are_400_naming_them(client: httpx.Client, extra: dict[str, Any], param: str) -> None:
    err = assert_error(client.post("/v1/responses", json={"input": "hi", **extra}), 400, param)
    assert err["code"] == "unsupported_parameter"


def test_harmless_values_pass(client: httpx.Client) -> None:
    create(client, {"input": "hi", "max_output_tokens": 2, "background": False, "include": [], "reasoning": {},
                    "truncation": "disabled", "service_tier": "auto", "top_logprobs": 0, "store": True,
                    "stream_options": {"include_obfuscation": False}, "prompt_cache_key": "k", "safety_identifier": "s",
                    "max_tool_calls": 3, "conversation": None,
                    "text": {"format": {"type": "text"}, "verbosity": "medium"}})


@pytest.mark.parametrize("body, param", [
    ({"input": 5}, "input"),
    ({}, "input"),
    ({"input": "hi", "temperature": "hot"}, "temperature"),
    ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "hi", "tools": [{"type": "function"}]}, "tools[0].name"),
    ({"input": "hi", "text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format"),
    ({"input": "hi", "tool_choice": "sometimes"}, "tool_choice"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"input": ["not an item"]}, "input[0]"),
    ({"input": "hi", "tools": [7]}, "tools[0]"),
])
def test_wrong_types_are_422_naming_the_field(client: httpx.Client, body: dict[str, Any], param: str) -> None:
    assert_error(client.post("/v1/responses", json=body), 422, param)


def test_shared_pipeline_errors_use_this_endpoints_names(client: httpx.Client) -> None:
    long = assert_error(client.post("/v1/responses", json={"input": "x" * 3000}), 400, "input")
    assert "maximum context length is 2048 tokens" in long["message"]
    over = assert_error(client.post("/v1/responses", json={"input": "hi", "max_output_tokens": 5000}), 400,
                        "max_output_tokens")
    assert "max_output_tokens" in over["message"] and "max_tokens" not in over["message"].replace("max_output", "")
    assert_error(client.post("/v1/responses", json={"input": "hi", "tools": [WEATHER],
                                                    "tool_choice": {"type": "function", "name": "nope"}}),
                 400, "tool_choice.name")
    assert_error(client.post("/v1/responses", json={"input": "hi", "tool_choice": "required"}), 400, "tool_choice")
