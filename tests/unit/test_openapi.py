"""GET /openapi.json: a valid OpenAPI 3.1 document that lists exactly the served routes, whose request
schemas are the handlers' own models and whose response schemas match what the server really sends."""
from __future__ import annotations

import json
from typing import Any, Iterator

import httpx
import jsonschema
import pytest
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from awqserve.config.engine_config import EngineConfig
from awqserve.entrypoints.openai.app import create_app
from awqserve.entrypoints.openai.openapi import OPERATIONS, build_document, served_operations
from awqserve.entrypoints.openai.protocol import ChatCompletionRequest
from awqserve.entrypoints.openai.server_config import ServerConfig
from server_harness import RunningServer, run_server

MSG = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    with run_server(ServerConfig(), step_delay=0.001) as s:
        yield s


@pytest.fixture(scope="module")
def doc(srv: RunningServer) -> dict[str, Any]:
    r = httpx.get(srv.url + "/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    return dict(r.json())


def _validator(doc: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    registry: Registry[Any] = Registry().with_resource("urn:doc", DRAFT202012.create_resource(doc))
    return jsonschema.Draft202012Validator({"$ref": f"urn:doc#/components/schemas/{name}"}, registry=registry)


def _app_routes(config: ServerConfig) -> set[tuple[str, str]]:
    app = create_app(config, EngineConfig(max_model_len=64))
    out = set()
    for route in app.router.routes:
        path = getattr(route, "path", "").replace(":path", "")
        for method in getattr(route, "methods", None) or ():
            if method != "HEAD":
                out.add((path, method.lower()))
    return out


@pytest.mark.parametrize("config", [ServerConfig(), ServerConfig(ui=False, disable_metrics=True)])
def test_documents_exactly_the_served_routes(config: ServerConfig) -> None:
    documented = {(op.path, op.method) for op in served_operations(config)}
    assert documented == _app_routes(config)
    paths = build_document(config)["paths"]
    assert {(p, m) for p, ops in paths.items() for m in ops} == documented


def test_document_is_valid_openapi(doc: dict[str, Any]) -> None:
    from openapi_spec_validator import validate

    validate(doc)
    assert doc["openapi"].startswith("3.1") and doc["info"]["title"] == "awqserve"


def test_request_schemas_are_the_handlers_models(doc: dict[str, Any]) -> None:
    body = doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ChatCompletionRequest"}
    schema = doc["components"]["schemas"]["ChatCompletionRequest"]
    assert set(schema["properties"]) == set(ChatCompletionRequest.model_fields)
    assert schema["properties"]["seed"]  # every field, incl. vLLM's extensions, is documented
    assert "messages" in schema["required"]


def test_security_follows_api_keys() -> None:
    open_doc = build_document(ServerConfig())
    assert all("security" not in op for ops in open_doc["paths"].values() for op in ops.values())
    keyed = build_document(ServerConfig(api_keys=("k",)))["paths"]
    assert keyed["/v1/chat/completions"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in keyed["/health"]["get"] and "security" not in keyed["/metrics"]["get"]
    assert "security" not in keyed["/"]["get"]


def _check(doc: dict[str, Any], name: str, body: Any) -> None:
    errors = sorted(_validator(doc, name).iter_errors(body), key=str)
    assert not errors, f"{name}: {errors[0]}"


def test_responses_match_their_schemas(srv: RunningServer, doc: dict[str, Any]) -> None:
    with srv.client() as c:
        chat = c.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 4, "logprobs": True,
                                                    "top_logprobs": 2}).json()
        _check(doc, "ChatCompletion", chat)
        comp = c.post("/v1/completions", json={"prompt": "hi", "max_tokens": 3, "logprobs": 1}).json()
        _check(doc, "Completion", comp)
        models = c.get("/v1/models").json()
        _check(doc, "ModelList", models)
        _check(doc, "Model", c.get(f"/v1/models/{models['data'][0]['id']}").json())
        _check(doc, "TokenizeResponse", c.post("/tokenize", json={"prompt": "hi"}).json())
        _check(doc, "DetokenizeResponse", c.post("/detokenize", json={"tokens": [104, 105]}).json())
        _check(doc, "Health", c.get("/health").json())
        _check(doc, "Version", c.get("/version").json())
        resp = c.post("/v1/responses", json={"input": "hi", "max_output_tokens": 3}).json()
        _check(doc, "Response", resp)
        _check(doc, "Response", c.get(f"/v1/responses/{resp['id']}").json())
        _check(doc, "ResponseDeleted", c.delete(f"/v1/responses/{resp['id']}").json())
        _check(doc, "Error", c.post("/v1/chat/completions", json={"messages": []}).json())
        with c.stream("POST", "/v1/chat/completions", json={"messages": MSG, "max_tokens": 3, "stream": True,
                                                            "stream_options": {"include_usage": True}}) as r:
            chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
        assert chunks and all(not list(_validator(doc, "ChatCompletionChunk").iter_errors(ch)) for ch in chunks)


def test_every_operation_has_an_error_or_probe_response() -> None:
    for op in OPERATIONS:
        responses = build_document(ServerConfig())["paths"][op.path][op.method]["responses"]
        assert "200" in responses and ("503" in responses)
