"""Shared setup of the Responses API tests: a server on the fake engine, the SDK, OpenAPI schemas,
and `script` (greedy output spells a given text once, then stops)."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

import fake_engine
from awqserve.config.engine_config import EngineConfig
from awqserve.engine.outputs import CompletionOutput
from awqserve.entrypoints.openai.server_config import ServerConfig
from fake_engine import PHRASE  # noqa: F401  (re-exported: the tests expect the fake's phrase)
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
