"""`GET /openapi.json`: the OpenAPI 3.1 document of this server, for client generators and fuzzers.

Request bodies come from the same pydantic models the handlers parse with, so the document cannot
drift from what is validated; response bodies from openapi_schemas.py. `OPERATIONS` is the one list of
documented routes: tests/unit/test_openapi.py checks it against the app's router (every route
documented, nothing documented that is not served). When API keys are set, every operation but the
health probes, metrics (unless `--protect-metrics`) and the chat page carries the bearer requirement.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from awqserve.entrypoints.openai import openapi_schemas as S
from awqserve.entrypoints.openai.protocol import (ChatCompletionRequest, CompletionRequest, DetokenizeRequest,
                                                  TokenizeRequest)
from awqserve.entrypoints.openai.protocol_responses import ResponsesRequest
from awqserve.entrypoints.openai.server_config import ServerConfig
from awqserve.version import __version__

REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Operation:
    """One documented route. `access`: "api" (key-protected), "public", "metrics" or "ui"."""

    path: str
    method: str
    op_id: str
    summary: str
    body: type[BaseModel] | None = None
    response: str | None = None  # a key of openapi_schemas.RESPONSE_SCHEMAS; None: not JSON
    media: str = "application/json"
    streams: bool = False
    access: str = "api"
    params: tuple[str, ...] = ()  # path parameters


OPERATIONS: tuple[Operation, ...] = (
    Operation("/v1/chat/completions", "post", "createChatCompletion", "Chat completion (SSE with stream: true)",
              ChatCompletionRequest, "ChatCompletion", streams=True),
    Operation("/v1/completions", "post", "createCompletion", "Text completion (SSE with stream: true)",
              CompletionRequest, "Completion", streams=True),
    Operation("/v1/responses", "post", "createResponse", "Responses API (named SSE events with stream: true)",
              ResponsesRequest, "Response", streams=True),
    Operation("/v1/responses/{response_id}", "get", "getResponse", "A stored response", None, "Response",
              params=("response_id",)),
    Operation("/v1/responses/{response_id}", "delete", "deleteResponse", "Delete a stored response", None,
              "ResponseDeleted", params=("response_id",)),
    Operation("/v1/models", "get", "listModels", "Served models", None, "ModelList"),
    Operation("/v1/models/{model_id}", "get", "retrieveModel", "One served model with its quantization", None,
              "Model", params=("model_id",)),
    Operation("/tokenize", "post", "tokenize", "Prompt or messages to token ids", TokenizeRequest, "TokenizeResponse"),
    Operation("/detokenize", "post", "detokenize", "Token ids to text", DetokenizeRequest, "DetokenizeResponse"),
    Operation("/version", "get", "version", "Server version", None, "Version"),
    Operation("/openapi.json", "get", "openapi", "This document", None, None),
    Operation("/health", "get", "health", "Liveness and readiness with load figures (503 while loading)",
              None, "Health", access="public"),
    Operation("/health/live", "get", "live", "Process liveness", None, "Health", access="public"),
    Operation("/health/ready", "get", "ready", "Readiness (503 unless ready)", None, "Health", access="public"),
    Operation("/metrics", "get", "metrics", "Prometheus metrics (vLLM's names)", None, None,
              media="text/plain", access="metrics"),
    Operation("/", "get", "chatPage", "The chat page", None, None, media="text/html", access="ui"),
    Operation("/ui/{name}", "get", "chatPageAsset", "A static file of the chat page", None, None,
              media="application/octet-stream", access="ui", params=("name",)),
)


def served_operations(config: ServerConfig) -> list[Operation]:
    """The operations this configuration serves (metrics and the page can be turned off)."""
    return [op for op in OPERATIONS
            if not (op.access == "metrics" and config.disable_metrics) and not (op.access == "ui" and not config.ui)]


def build_document(config: ServerConfig) -> dict[str, Any]:
    """The whole document for `config` (deterministic: same config, same bytes)."""
    ops = served_operations(config)
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        paths.setdefault(op.path, {})[op.method] = _operation(op, config)
    return {
        "openapi": "3.1.0",
        "info": {"title": "awqserve", "version": __version__,
                 "description": "OpenAI-compatible inference server for 4-bit AWQ models. Errors always use "
                                "OpenAI's envelope; unknown parameters are refused with a 400 naming them."},
        "paths": paths,
        "components": {"schemas": _schemas(), "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def _guarded(op: Operation, config: ServerConfig) -> bool:
    if not config.api_keys:
        return False
    return op.access == "api" or (op.access == "metrics" and config.protect_metrics)


def _operation(op: Operation, config: ServerConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": op.op_id, "summary": op.summary, "responses": _responses(op)}
    if op.body is not None:
        out["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": {"$ref": REF.format(model=op.body.__name__)}}}}
    if op.params:
        out["parameters"] = [{"name": p, "in": "path", "required": True, "schema": S.STR} for p in op.params]
    if _guarded(op, config):
        out["security"] = [{"bearer": []}]
    return out


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}}}


def _responses(op: Operation) -> dict[str, Any]:
    if op.response is not None:
        content: dict[str, Any] = {op.media: {"schema": {"$ref": REF.format(model=op.response)}}}
    else:
        content = {op.media: {"schema": S.STR if op.media != "application/json" else {"type": "object"}}}
    if op.streams:
        content["text/event-stream"] = {"schema": S.STR}
    ok = {"description": "OK" + (f". {S.SSE_NOTE}" if op.streams else ""), "content": content}
    out: dict[str, Any] = {"200": ok}
    if op.access == "public":
        out["503"] = {"description": "Not ready (loading, draining or dead), with Retry-After",
                      "content": {"application/json": {"schema": {"$ref": REF.format(model="Health")}}}}
        return out
    out.update({"400": _error("Invalid request (names the field)"), "401": _error("Missing or wrong API key"),
                "404": _error("Unknown model, response or file"), "413": _error("Body over the size limit"),
                "422": _error("A field of the wrong type or out of range (names the field)"),
                "429": _error("Rate limited (Retry-After)"),
                "503": _error("Loading, draining or overloaded (Retry-After)"), "500": _error("Server error")})
    return out


@lru_cache(maxsize=1)
def _schemas() -> dict[str, Any]:
    models: list[type[BaseModel]] = [ChatCompletionRequest, CompletionRequest, ResponsesRequest, TokenizeRequest,
                                     DetokenizeRequest]
    _, generated = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    schemas: dict[str, Any] = dict(generated.get("$defs", {}))
    schemas["Error"] = S.ERROR
    schemas.update(S.RESPONSE_SCHEMAS)
    return schemas
