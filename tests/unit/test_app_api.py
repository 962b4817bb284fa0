"""The HTTP API over real sockets on the fake engine: shapes, streaming, parameters, error envelopes."""
from __future__ import annotations

import json
import time
from typing import Any, Iterator

import httpx
import pytest

from awqserve.entrypoints.openai.server_config import ServerConfig
from fake_engine import PHRASE
from server_harness import RunningServer, run_server

MSG = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    with run_server(ServerConfig(), step_delay=0.002) as s:
        yield s


@pytest.fixture(scope="module")
def client(srv: RunningServer) -> Iterator[httpx.Client]:
    with srv.client() as c:
        yield c


def sse(client: httpx.Client, path: str, body: dict[str, Any]) -> list[Any]:
    """POST a streaming request; returns parsed events, '[DONE]' kept as the string."""
    events: list[Any] = []
    with client.stream("POST", path, json={**body, "stream": True}) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                data = line[len("data: "):]
                events.append(data if data == "[DONE]" else json.loads(data))
    return events


def assert_envelope(r: httpx.Response, status: int, param: str | None = ...) -> dict[str, Any]:  # type: ignore[assignment]
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not ...:
        assert err["param"] == param
    return err


def test_chat_greedy_and_usage(client: httpx.Client) -> None:
    r = client.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 9, "temperature": 0})
    body = r.json()
    assert r.status_code == 200 and body["object"] == "chat.completion"
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": PHRASE[:9], "refusal": None}
    assert choice["finish_reason"] == "length" and choice["logprobs"] is None
    prompt = client.post("/tokenize", json={"messages": MSG}).json()["count"]
    assert body["usage"] == {"prompt_tokens": prompt, "completion_tokens": 9, "total_tokens": prompt + 9}
    assert r.headers["x-awqserve-quantization-method"] == "awq" and r.headers["x-awqserve-quantization-bits"] == "4"
    assert r.headers["x-awqserve-quantization-group-size"] == "128"


def test_default_max_tokens_is_remaining_context(client: httpx.Client, srv: RunningServer) -> None:
    r = client.post("/v1/completions", json={"prompt": "x" * 250, "temperature": 0})
    assert r.json()["usage"]["completion_tokens"] == srv.engine.max_model_len - 250


def test_chat_stream_shape(client: httpx.Client) -> None:
    events = sse(client, "/v1/chat/completions", {"messages": MSG, "max_tokens": 5, "temperature": 0,
                                                 "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c["usage"] is None for c in chunks[:-1]) and chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 5
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert text == PHRASE[:5] and chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert len({c["id"] for c in chunks}) == 1


def test_stream_without_include_usage_has_no_usage_key(client: httpx.Client) -> None:
    events = sse(client, "/v1/chat/completions", {"messages": MSG, "max_tokens": 2})
    assert all("usage" not in c for c in events[:-1])


def test_n2_and_seed_reproducibility(client: httpx.Client) -> None:
    body = {"messages": MSG, "max_tokens": 12, "temperature": 1.0, "n": 2, "seed": 7}
    a = client.post("/v1/chat/completions", json=body).json()
    b = client.post("/v1/chat/completions", json=body).json()
    texts = [c["message"]["content"] for c in a["choices"]]
    assert [c["index"] for c in a["choices"]] == [0, 1] and texts[0] != texts[1]
    assert texts == [c["message"]["content"] for c in b["choices"]]
    assert a["usage"]["completion_tokens"] == 24


def test_stream_n2_every_choice_finishes(client: httpx.Client) -> None:
    events = sse(client, "/v1/completions", {"prompt": "abc", "max_tokens": 4, "n": 2, "temperature": 0})
    finishes = {c["choices"][0]["index"]: c["choices"][0]["finish_reason"] for c in events[:-1]
                if c["choices"][0]["finish_reason"]}
    assert finishes == {0: "length", 1: "length"}


def test_stop_strings(client: httpx.Client) -> None:
    r = client.post("/v1/chat/completions", json={"messages": MSG, "temperature": 0, "stop": ["fox"]}).json()
    assert r["choices"][0]["message"]["content"] == "The quick brown "
    assert r["choices"][0]["finish_reason"] == "stop"
    events = sse(client, "/v1/completions", {"prompt": "a", "temperature": 0, "stop": "brown"})
    assert "".join(c["choices"][0]["text"] for c in events[:-1]) == "The quick "


def test_chat_logprobs_shape(client: httpx.Client) -> None:
    r = client.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 3, "temperature": 0,
                                                  "logprobs": True, "top_logprobs": 2}).json()
    content = r["choices"][0]["logprobs"]["content"]
    assert len(content) == 3 and [c["token"] for c in content] == list(PHRASE[:3])
    for item in content:
        assert set(item) == {"token", "logprob", "bytes", "top_logprobs"} and len(item["top_logprobs"]) == 2
        assert item["bytes"] == list(item["token"].encode())


def test_completion_forms_and_echo_logprobs(client: httpx.Client) -> None:
    r = client.post("/v1/completions", json={"prompt": [[65, 66], [67]], "max_tokens": 2, "temperature": 0,
                                             "n": 2}).json()
    assert [c["index"] for c in r["choices"]] == [0, 1, 2, 3] and r["usage"]["prompt_tokens"] == 3
    r = client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2, "temperature": 0, "echo": True,
                                             "logprobs": 1}).json()
    c = r["choices"][0]
    assert c["text"] == "hi" + PHRASE[:2]
    lp = c["logprobs"]
    assert lp["tokens"] == ["h", "i", "T", "h"] and lp["token_logprobs"][0] is None
    assert lp["text_offset"] == [0, 1, 2, 3] and len(lp["top_logprobs"]) == 4


def test_tokenize_detokenize_roundtrip(client: httpx.Client) -> None:
    t = client.post("/tokenize", json={"prompt": "héllo", "return_token_strs": True}).json()
    assert t["count"] == len(t["tokens"]) == 6 and t["max_model_len"] == 256
    assert client.post("/detokenize", json={"tokens": t["tokens"]}).json() == {"prompt": "héllo"}


def test_models(client: httpx.Client) -> None:
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and len(models["data"]) == 1
    card = models["data"][0]
    assert card["quantization"] == {"method": "awq", "format": "pack-quantized", "bits": 4, "group_size": 128,
                                    "symmetric": True}
    assert card["max_model_len"] == 256
    assert client.get(f"/v1/models/{card['id']}").json()["id"] == card["id"]
    assert_envelope(client.get("/v1/models/nope"), 404, "model")


@pytest.mark.parametrize("method, path, body, status, param", [
    ("POST", "/v1/chat/completions", {"messages": MSG, "model": "nope"}, 404, "model"),
    ("POST", "/v1/chat/completions", {"messages": MSG, "tools": [{"type": "function"}]}, 422, "tools[0].function"),
    ("POST", "/v1/chat/completions", {"messages": MSG, "tool_choice": "auto"}, 400, "tool_choice"),
    ("POST", "/v1/chat/completions", {"messages": MSG, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "nonsense"}}}}, 400, "response_format.json_schema"),
    ("POST", "/v1/chat/completions", {"messages": MSG, "response_format": {"type": "json_object"},
                                      "guided_regex": "a+"}, 400, "guided_regex"),
    ("POST", "/v1/completions", {"prompt": "a", "structured_outputs": {"regex": "("}}, 400,
     "structured_outputs.regex"),
    ("POST", "/v1/completions", {"prompt": "a", "guided_decoding_backend": "outlines", "guided_json": {}}, 400,
     "guided_decoding_backend"),
    ("POST", "/v1/chat/completions", {"messages": MSG, "temperature": 9}, 422, "temperature"),
    ("POST", "/v1/chat/completions", {"messages": MSG, "top_logprobs": 2}, 400, "top_logprobs"),
    ("POST", "/v1/chat/completions", {"messages": MSG, "logprobs": True, "top_logprobs": 50}, 400, "top_logprobs"),
    ("POST", "/v1/chat/completions", {"messages": MSG, "logit_bias": {"999999": 1}}, 400, "logit_bias"),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
     "messages[0].content[0].type"),
    ("POST", "/v1/completions", {"prompt": "a", "best_of": 3}, 400, "best_of"),
    ("POST", "/v1/completions", {"prompt": "a", "suffix": "b"}, 400, "suffix"),
    ("POST", "/v1/completions", {"prompt": [99999]}, 400, "prompt"),
    ("POST", "/v1/completions", {"prompt": []}, 400, "prompt"),
    ("POST", "/v1/completions", {"prompt": "x" * 300}, 400, "prompt"),
    ("POST", "/v1/completions", {"prompt": "x" * 100, "max_tokens": 200}, 400, "max_tokens"),
    ("POST", "/v1/completions", {"prompt": "a", "min_tokens": 5, "max_tokens": 2}, 400, "min_tokens"),
    ("GET", "/nope", None, 404, None),
    ("GET", "/v1/chat/completions", None, 405, None),
])
def test_error_paths(client: httpx.Client, method: str, path: str, body: Any, status: int, param: str | None) -> None:
    err = assert_envelope(client.request(method, path, json=body), status, param)
    if status == 400 and param in ("prompt", "max_tokens") and "context" in err["message"]:
        assert "maximum context length is 256 tokens" in err["message"] and err["code"] == "context_length_exceeded"


def test_non_json_and_oversized_bodies(client: httpx.Client, srv: RunningServer) -> None:
    err = assert_envelope(client.post("/v1/chat/completions", content=b"{nope",
                                      headers={"content-type": "application/json"}), 400, None)
    assert err["code"] == "invalid_json"
    big = b"x" * (srv.state.config.max_request_body_bytes + 1)
    assert_envelope(client.post("/v1/completions", content=big), 413, None)

    def chunks() -> Iterator[bytes]:  # no content-length: counted as it arrives
        for _ in range(17):
            yield b" " * (1 << 20)

    assert_envelope(client.post("/v1/completions", content=chunks()), 413, None)


def test_request_id_is_echoed(client: httpx.Client) -> None:
    r = client.get("/health", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert len(client.get("/version").headers["x-request-id"]) == 32


def test_debug_header_adds_timings(client: httpx.Client) -> None:
    plain = client.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 3})
    assert "x-awqserve-ttft-ms" not in plain.headers
    r = client.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 3},
                    headers={"x-awqserve-debug": "1"})
    for h in ("x-awqserve-queue-ms", "x-awqserve-ttft-ms", "x-awqserve-decode-tokens-per-s"):
        assert float(r.headers[h]) >= 0
    with client.stream("POST", "/v1/chat/completions", json={"messages": MSG, "max_tokens": 3, "stream": True},
                       headers={"x-awqserve-debug": "1"}) as s:
        lines = [json.loads(x[6:]) for x in s.iter_lines() if x.startswith("data: {")]
    assert set(lines[-1]["awqserve_timing"]) == {"queue_ms", "ttft_ms", "decode_tokens_per_s", "e2e_ms"}


def test_health_endpoints(client: httpx.Client) -> None:
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["ready"] is True and {"uptime_s", "queue_depth", "kv_cache_usage"} <= set(h)
    assert client.get("/health/live").status_code == 200 and client.get("/health/ready").status_code == 200


def test_oom_in_step_fails_only_that_request(client: httpx.Client) -> None:
    r = client.post("/v1/completions", json={"prompt": "__oom__", "max_tokens": 5})
    err = assert_envelope(r, 503, None)
    assert err["code"] == "out_of_memory" and "max_tokens" in err["message"] and r.headers["retry-after"]
    events = sse(client, "/v1/completions", {"prompt": "__oom__", "max_tokens": 5})
    assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "out_of_memory"
    assert client.post("/v1/completions", json={"prompt": "fine", "max_tokens": 2}).status_code == 200


def test_client_disconnect_aborts(srv: RunningServer, client: httpx.Client) -> None:
    before = len(srv.engine.aborts)
    with client.stream("POST", "/v1/completions", json={"prompt": "a", "max_tokens": 200, "stream": True}) as r:
        next(r.iter_lines())
    _wait_for(lambda: srv.state.tracker.api_requests == 0 and len(srv.engine.aborts) > before)
    with pytest.raises(httpx.ReadTimeout):  # non-streaming: the watcher notices the disconnect too
        client.post("/v1/completions", json={"prompt": "b", "max_tokens": 200}, timeout=0.2)
    _wait_for(lambda: srv.state.tracker.api_requests == 0 and len(srv.engine.aborts) > before + 1)
    assert not srv.engine._running


def _wait_for(cond: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)
