"""Tools and reasoning through the real HTTP layer, on the fake engine with scripted model outputs.

The fake answers `__script__:TEXT` with exactly TEXT, one byte-token per step, so these tests drive
the hermes and qwen3 parsers through the chat endpoint at every token boundary and check the OpenAI
shapes: message fields, finish reasons, and stream deltas (`index`; `id`, `type`, `name` once;
`arguments` as fragments that join to the JSON; reasoning under both field names).
"""
from __future__ import annotations

import json
from typing import Any, Iterator

import httpx
import pytest

from awqserve.config.engine_config import EngineConfig
from awqserve.entrypoints.openai.server_config import ServerConfig
from server_harness import run_server
from test_app_api import sse

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris, \\"FR\\" }"}}\n</tool_call>'
THINK = "<think>\nThe user asks about weather.\n</think>\n\n"


def _ask(script: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"__script__:{script}"}]


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    engine = EngineConfig(max_model_len=4096, max_num_seqs=8)  # the tools prompt is long in byte tokens
    with run_server(ServerConfig(reasoning_parser="qwen3"), engine, step_delay=0.0005) as s, s.client() as c:
        yield c


def _chat(client: httpx.Client, script: str, **body: Any) -> dict[str, Any]:
    r = client.post("/v1/chat/completions", json={"messages": _ask(script), **body})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]


def test_tool_call_message_and_finish_reason(client: httpx.Client) -> None:
    choice = _chat(client, "Let me check.\n" + CALL, tools=TOOLS)
    msg = choice["message"]
    assert choice["finish_reason"] == "tool_calls" and msg["content"] == "Let me check."
    (call,) = msg["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": 'Paris, "FR" }'}
    assert msg["reasoning_content"] is None and msg["reasoning"] is None


def test_reasoning_is_split_under_both_names(client: httpx.Client) -> None:
    msg = _chat(client, THINK + "It is sunny.")["message"]
    assert msg["content"] == "It is sunny." and "tool_calls" not in msg
    assert msg["reasoning_content"] == msg["reasoning"] == "The user asks about weather."


def test_stream_deltas_have_openai_shape(client: httpx.Client) -> None:
    events = sse(client, "/v1/chat/completions", {"messages": _ask(THINK + CALL), "tools": TOOLS})
    assert events[-1] == "[DONE]"
    deltas = [e["choices"][0]["delta"] for e in events[:-1] if e["choices"]]
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
    assert reasoning == "".join(d.get("reasoning", "") for d in deltas) == "The user asks about weather."
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    starts = [tc for tc in calls if "id" in tc]
    assert len(starts) == 1 and starts[0]["function"]["name"] == "get_weather" and starts[0]["type"] == "function"
    assert all(tc["index"] == 0 for tc in calls)
    assert all("name" not in tc["function"] for tc in calls if "id" not in tc)  # the name comes once
    args = "".join(tc["function"].get("arguments", "") for tc in calls)
    assert json.loads(args) == {"city": 'Paris, "FR" }'}  # the closing braces survive (vLLM #22885)
    assert not any(d.get("content") for d in deltas)
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_equals_non_stream(client: httpx.Client) -> None:
    script = "Two calls:\n" + CALL + "\n" + CALL.replace("Paris", "Rome")
    full = _chat(client, script, tools=TOOLS)["message"]
    events = sse(client, "/v1/chat/completions", {"messages": _ask(script), "tools": TOOLS})
    deltas = [e["choices"][0]["delta"] for e in events[:-1] if e["choices"]]
    content = "".join(d.get("content") or "" for d in deltas)
    by_index: dict[int, str] = {}
    for tc in (tc for d in deltas for tc in d.get("tool_calls", [])):
        by_index[tc["index"]] = by_index.get(tc["index"], "") + tc["function"].get("arguments", "")
    assert content == full["content"] and len(by_index) == 2
    assert [json.loads(a) for _, a in sorted(by_index.items())] == \
           [json.loads(c["function"]["arguments"]) for c in full["tool_calls"]]


def test_no_tools_means_no_parsing(client: httpx.Client) -> None:
    msg = _chat(client, CALL)["message"]  # no tools offered: the text is content, as the model wrote it
    assert msg["content"] == CALL and "tool_calls" not in msg
    msg = _chat(client, CALL, tools=TOOLS, tool_choice="none")["message"]
    assert msg["content"] == CALL and "tool_calls" not in msg


def test_cut_call_is_length_and_not_a_call(client: httpx.Client) -> None:
    choice = _chat(client, CALL, tools=TOOLS, max_tokens=20)
    assert choice["finish_reason"] == "length" and "tool_calls" not in choice["message"]


def test_template_kwargs_reach_the_template_and_reserved_ones_are_refused(client: httpx.Client) -> None:
    assert _chat(client, "ok", chat_template_kwargs={"enable_thinking": False})["message"]["content"] == "ok"
    r = client.post("/v1/chat/completions", json={"messages": _ask("x"), "chat_template_kwargs": {"tools": []}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "chat_template_kwargs.tools"
