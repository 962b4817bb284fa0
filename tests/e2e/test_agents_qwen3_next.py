"""Tools on the tiny Qwen3-Next fixture, served with a chat template that renders tools in the hermes
format (tests/fixtures/hermes_tools.jinja), through the official SDK.

Random weights know nothing: every call is well-formed only because the grammar makes it so, and the
second turn shows the tool history going through the template (the prompt grows by the rendered call
and its `<tool_response>`).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import pytest

from conftest import ServerProcess, start_server

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.build_tiny import TinyModel, build  # noqa: E402

TEMPLATE = Path(__file__).resolve().parents[1] / "fixtures" / "hermes_tools.jinja"
LOOKUP = {"type": "function", "function": {"name": "lookup", "parameters": {
    "type": "object", "properties": {"term": {"type": "string", "maxLength": 12},
                                     "limit": {"type": "integer", "minimum": 1, "maximum": 9}},
    "required": ["term", "limit"], "additionalProperties": False}}}
NOTE = {"type": "function", "function": {"name": "note", "parameters": {
    "type": "object", "properties": {"level": {"type": "string", "enum": ["low", "high"]}},
    "required": ["level"], "additionalProperties": False}}}
ASK = [{"role": "user", "content": "Look up gated delta networks."}]
RUN: dict[str, Any] = {"temperature": 0, "max_tokens": 400, "parallel_tool_calls": False}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    model = build("qwen3_next", tmp_path_factory.mktemp("q3n_tools"))
    # byte tokens make the tool prompt long: serve the fixture at a 2k context (RoPE is computed, no weights change)
    cfg_path = model.awq_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["max_position_embeddings"] = 2048
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return model


@pytest.fixture(scope="module")
def oai(tiny: TinyModel) -> Iterator[Any]:
    from openai import OpenAI

    proc: ServerProcess = start_server(tiny.awq_dir, ["--served-model-name", "tiny-qwen3-next", "--chat-template",
                                                      str(TEMPLATE), "--weight-layout", "dense", "--max-model-len", "2048"])
    yield OpenAI(base_url=proc.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    proc.stop()


def _valid(calls: Any, tools: list[dict[str, Any]]) -> None:
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    assert calls
    for c in calls:
        jsonschema.validate(json.loads(c.function.arguments), schemas[c.function.name])


def test_required_and_named_calls_validate(oai: Any) -> None:
    r = oai.chat.completions.create(model="tiny-qwen3-next", messages=ASK, tools=[LOOKUP, NOTE],
                                    tool_choice="required", **RUN)
    assert r.choices[0].finish_reason == "tool_calls"
    _valid(r.choices[0].message.tool_calls, [LOOKUP, NOTE])
    r = oai.chat.completions.create(model="tiny-qwen3-next", messages=ASK, tools=[LOOKUP, NOTE],
                                    tool_choice={"type": "function", "function": {"name": "note"}}, **RUN)
    assert [c.function.name for c in r.choices[0].message.tool_calls] == ["note"]
    _valid(r.choices[0].message.tool_calls, [NOTE])


def test_stream_equals_non_stream(oai: Any) -> None:
    body = {"model": "tiny-qwen3-next", "messages": ASK, "tools": [LOOKUP], "tool_choice": "required", **RUN}
    full = oai.chat.completions.create(**body).choices[0].message.tool_calls
    args, names, reasons = "", [], []
    for chunk in oai.chat.completions.create(**body, stream=True):
        for ch in chunk.choices:
            reasons.append(ch.finish_reason)
            for tc in ch.delta.tool_calls or []:
                if tc.function.name:
                    names.append(tc.function.name)
                args += tc.function.arguments or ""
    assert names == [c.function.name for c in full] and json.loads(args) == json.loads(full[0].function.arguments)
    assert reasons[-1] == "tool_calls"


def test_two_turn_tool_conversation(oai: Any) -> None:
    first = oai.chat.completions.create(model="tiny-qwen3-next", messages=ASK, tools=[LOOKUP],
                                        tool_choice="required", **RUN)
    call = first.choices[0].message.tool_calls[0]
    history = ASK + [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                     {"role": "tool", "tool_call_id": call.id, "content": "DeltaNet: a linear-attention RNN."}]
    second = oai.chat.completions.create(model="tiny-qwen3-next", messages=history, tools=[LOOKUP],
                                         tool_choice="auto", **RUN)
    # the template rendered the call and the result into the prompt (byte tokens: one per character)
    grown = second.usage.prompt_tokens - first.usage.prompt_tokens
    assert grown >= len(call.function.arguments) + len("DeltaNet: a linear-attention RNN.")
    ch = second.choices[0]
    assert ch.finish_reason in ("stop", "length", "tool_calls")
    if ch.message.tool_calls:
        _valid(ch.message.tool_calls, [LOOKUP])


def test_json_schema_n2_stream_and_choice(oai: Any) -> None:
    schema = {"type": "object", "properties": {"label": {"type": "string", "enum": ["a", "b", "c"]},
                                               "score": {"type": "integer", "minimum": 0, "maximum": 9}},
              "required": ["label", "score"], "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    r = oai.chat.completions.create(model="tiny-qwen3-next", messages=ASK, response_format=fmt, n=2, seed=1,
                                    temperature=0.9, max_tokens=300)
    for ch in r.choices:
        assert ch.finish_reason == "stop"
        jsonschema.validate(json.loads(ch.message.content), schema)
    text = "".join(c.choices[0].delta.content or "" for c in oai.chat.completions.create(
        model="tiny-qwen3-next", messages=ASK, response_format=fmt, stream=True, temperature=0, max_tokens=300)
        if c.choices)
    jsonschema.validate(json.loads(text), schema)
    r = oai.chat.completions.create(model="tiny-qwen3-next", messages=ASK, temperature=0, max_tokens=20,
                                    extra_body={"structured_outputs": {"choice": ["red", "green"]}})
    assert r.choices[0].message.content in ("red", "green")
