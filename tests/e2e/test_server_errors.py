"""Every error path: status, OpenAI envelope (validated against the ErrorResponse schema), `param`, message."""
from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from conftest import Schemas

MSG = [{"role": "user", "content": "Hi"}]


def envelope(r: httpx.Response, status: int, schemas: Schemas) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    schemas.validate("ErrorResponse", body)
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


CASES = [  # (method, path, json body, status, param, substring of the message)
    ("POST", "/v1/chat/completions", {"messages": MSG, "model": "no-such-model"}, 404, "model", "does not exist"),
    ("GET", "/v1/models/no-such-model", None, 404, "model", "does not exist"),
    ("GET", "/v1/nothing-here", None, 404, None, "Unknown route"),
    ("DELETE", "/v1/models", None, 405, None, "not allowed"),
    ("GET", "/v1/chat/completions", None, 405, None, "not allowed"),
    ("POST", "/v1/chat/completions", {"messages": MSG, "tools": [{"type": "custom", "function": {"name": "f"}}]},
     400, "tools[0].type", "function tools"),
    ("POST", "/v1/chat/completions", {"messages": MSG, "tool_choice": "required"}, 400, "tool_choice", "tool_choice"),
    ("POST", "/v1/chat/completions", {"messages": MSG, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "properties": {"a": {"type": "strnig"}}}}}}, 400,
     "response_format.json_schema", "invalid JSON schema"),
    ("POST", "/v1/chat/completions", {"messages": MSG, "structured_outputs": {"regex": "a("}}, 400,
     "structured_outputs.regex", "invalid regex"),
    ("POST", "/v1/chat/completions", {"messages": MSG, "guided_json": {"type": "object"}, "guided_regex": "a"}, 400,
     "guided_regex", "Conflicting"),
    ("POST", "/v1/chat/completions", {"messages": MSG, "frobnicate": True}, 400, "frobnicate", "frobnicate"),
    ("POST", "/v1/chat/completions", {"messages": MSG, "temperature": 2.5}, 422, "temperature", "temperature"),
    ("POST", "/v1/chat/completions", {"messages": MSG, "max_tokens": "ten"}, 422, "max_tokens", "max_tokens"),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, 422, "messages[0].role",
     "messages[0].role"),
    ("POST", "/v1/chat/completions", {}, 422, "messages", "messages"),
    ("POST", "/v1/chat/completions", {"messages": MSG, "max_tokens": 600}, 400, "max_tokens",
     "maximum context length is 512 tokens"),
    ("POST", "/v1/completions", {"prompt": "word " * 600}, 400, "prompt", "maximum context length is 512 tokens"),
    ("POST", "/v1/completions", {"prompt": "hi", "logprobs": 100}, 400, "logprobs", "logprobs"),
    ("POST", "/v1/completions", {"prompt": [10 ** 9]}, 400, "prompt", "vocabulary"),
    ("POST", "/tokenize", {"prompt": 5}, 422, "prompt", "prompt"),
    ("POST", "/detokenize", {"tokens": [-1]}, 400, "tokens", "vocabulary"),
]


@pytest.mark.parametrize("method, path, body, status, param, needle", CASES,
                         ids=[f"{c[3]}-{c[1]}-{c[4]}" for c in CASES])
def test_error_envelopes(http: httpx.Client, schemas: Schemas, method: str, path: str, body: Any, status: int,
                         param: str | None, needle: str) -> None:
    err = envelope(http.request(method, path, json=body), status, schemas)
    assert err["param"] == param and needle in err["message"]


def test_context_overflow_hint(http: httpx.Client, schemas: Schemas) -> None:
    err = envelope(http.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 600}), 400, schemas)
    assert err["code"] == "context_length_exceeded" and "lower max_tokens" in err["message"]
    err = envelope(http.post("/v1/completions", json={"prompt": "word " * 600}), 400, schemas)
    assert "shorten the prompt" in err["message"]


def test_bodies_that_are_not_json_or_too_big(http: httpx.Client, schemas: Schemas) -> None:
    err = envelope(http.post("/v1/chat/completions", content=b"{'not': json}",
                             headers={"content-type": "application/json"}), 400, schemas)
    assert "JSON" in err["message"]
    envelope(http.post("/v1/completions", content=b"prompt=hello"), 400, schemas)  # curl -d without a type
    envelope(http.post("/v1/completions", content=b"x" * (17 << 20)), 413, schemas)


def test_sdk_raises_typed_errors(client: Any, model_name: str) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="missing", messages=MSG)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=model_name, messages=MSG, max_tokens=100000)
    assert "maximum context length is 512 tokens" in str(info.value)
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model=model_name, messages=MSG, temperature=7)
    with pytest.raises(openai.BadRequestError, match="tool_choice"):
        client.chat.completions.create(model=model_name, messages=MSG, tools=[
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            tool_choice={"type": "function", "function": {"name": "g"}})
