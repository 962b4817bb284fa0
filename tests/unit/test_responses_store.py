"""POST /v1/responses: the store (previous_response_id, GET, DELETE, stateless servers), refusals of what
is not implemented (400 naming the field) and schema errors (422 naming the field)."""
from __future__ import annotations

from typing import Any

import httpx
import pytest

from awqserve.entrypoints.openai.server_config import ServerConfig
from server_harness import run_server
from _responses_harness import (CALL_TEXT, ENGINE, GREEDY, PHRASE, WEATHER, Schemas, assert_error,  # noqa: F401
                               chat_prompt_tokens, client, create, events, schemas, script, sdk, srv, text_of)


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
