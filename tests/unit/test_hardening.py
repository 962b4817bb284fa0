"""Edge validation and security basics (issue #16) on the fake engine: seeds, message content,
stream_options, huge prompts refused before tokenizing, API keys, CORS, scrubbed 5xx bodies, logs
without prompt text unless `log_requests`."""
from __future__ import annotations

import logging
import time
from typing import Any, Iterator

import httpx
import pytest

from awqserve.engine.sampling_params import SEED_MAX, SEED_MIN, SamplingParams
from awqserve.entrypoints.openai import limits
from awqserve.entrypoints.openai.errors import APIError
from awqserve.entrypoints.openai.openapi import OPERATIONS
from awqserve.entrypoints.openai.server_config import ServerConfig
from server_harness import RunningServer, run_server

MSG = [{"role": "user", "content": "hello"}]
KEY = "s3cret-key"


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    with run_server(ServerConfig(), step_delay=0.001) as s:
        yield s


@pytest.fixture(scope="module")
def client(srv: RunningServer) -> Iterator[httpx.Client]:
    with srv.client() as c:
        yield c


def envelope(r: httpx.Response, status: int, param: str | None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err: dict[str, Any] = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["param"] == param
    return err


# ---- seeds (defect 1, the edge half) ----

def test_sampling_params_seed_range() -> None:
    assert SamplingParams(seed=SEED_MAX).seed == SEED_MAX and SamplingParams(seed=SEED_MIN).seed == SEED_MIN
    assert SamplingParams(seed=-1).seed is None  # -1: no seed (llama.cpp's convention)
    for bad in (SEED_MAX + 1, SEED_MIN - 1, 2 ** 200):
        with pytest.raises(ValueError, match="^seed "):
            SamplingParams(seed=bad)


@pytest.mark.parametrize("seed", [2 ** 64, 2 ** 200, -2 ** 70, SEED_MAX + 1])
@pytest.mark.parametrize("path, body", [("/v1/chat/completions", {"messages": MSG}),
                                        ("/v1/completions", {"prompt": "hi"}),
                                        ("/v1/responses", {"input": "hi"})])
def test_out_of_range_seed_is_400_naming_seed(client: httpx.Client, path: str, body: dict[str, Any],
                                              seed: int) -> None:
    r = client.post(path, json={**body, "seed": seed, "max_tokens" if "input" not in body else
                                "max_output_tokens": 2})
    assert "64-bit" in envelope(r, 400, "seed")["message"]


def test_extreme_seeds_that_are_valid_work(client: httpx.Client) -> None:
    for seed in (SEED_MAX, SEED_MIN, -1, -5):
        body = {"prompt": "hi", "max_tokens": 3, "seed": seed, "n": 2, "temperature": 1.0}
        assert client.post("/v1/completions", json=body).status_code == 200


# ---- defect 3: content, stream_options ----

@pytest.mark.parametrize("messages, param", [
    ([{"role": "user"}], "messages[0].content"),
    ([{"role": "user", "content": None}], "messages[0].content"),
    ([{"role": "system"}, *MSG], "messages[0].content"),
    ([*MSG, {"role": "assistant"}, *MSG], "messages[1].content"),
    ([{"role": "user", "content": []}], "messages[0].content"),
])
def test_message_without_content_is_400(client: httpx.Client, messages: list[dict[str, Any]], param: str) -> None:
    envelope(client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 2}), 400, param)
    envelope(client.post("/tokenize", json={"messages": messages}), 400, param)


def test_assistant_with_tool_calls_needs_no_content(client: httpx.Client) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [*MSG, {"role": "assistant", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"}]
    assert client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 2}).status_code == 200


@pytest.mark.parametrize("path, body", [("/v1/chat/completions", {"messages": MSG}),
                                        ("/v1/completions", {"prompt": "hi"})])
def test_stream_options_needs_stream(client: httpx.Client, path: str, body: dict[str, Any]) -> None:
    for stream in ({}, {"stream": False}):
        r = client.post(path, json={**body, **stream, "max_tokens": 2, "stream_options": {"include_usage": True}})
        envelope(r, 400, "stream_options")
    r = client.post(path, json={**body, "max_tokens": 2, "stream_options": None})
    assert r.status_code == 200


# ---- huge prompts: refused from their length, without tokenizing them ----

def test_huge_prompt_is_refused_before_tokenizing(client: httpx.Client) -> None:
    text = "a" * 8_000_000
    for path, body, param in (("/v1/chat/completions", {"messages": [{"role": "user", "content": text}]}, "messages"),
                              ("/v1/completions", {"prompt": text}, "prompt")):
        t0 = time.monotonic()
        err = envelope(client.post(path, json=body), 400, param)
        assert err["code"] == "context_length_exceeded" and "maximum context length is" in err["message"]
        assert time.monotonic() - t0 < 5.0  # tokenizing 8M characters would hold the event loop far longer


# ---- security basics ----

def test_api_key_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = limits.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(limits.hmac, "compare_digest", spy)
    assert limits.api_key_ok("k1", ["k1", "k2", "k3"])
    assert len(calls) == 3  # every key compared, no early exit on the match


def test_every_route_but_probes_metrics_and_page_needs_the_key() -> None:
    with run_server(ServerConfig(api_keys=(KEY,))) as s, s.client() as c:
        for op in OPERATIONS:
            path = op.path.replace("{response_id}", "resp_x").replace("{model_id}", "m").replace("{name}", "app.js")
            r = c.request(op.method.upper(), path, json={} if op.body else None)
            if op.access == "api":
                assert envelope(r, 401, None)["code"] == "invalid_api_key", path
            else:
                assert r.status_code != 401, path
        auth = {"authorization": f"Bearer {KEY}"}
        assert c.get("/version", headers=auth).status_code == 200


def test_cors_is_off_unless_configured(client: httpx.Client) -> None:
    pre = client.options("/v1/chat/completions", headers={"origin": "http://evil.example",
                                                         "access-control-request-method": "POST"})
    assert "access-control-allow-origin" not in pre.headers
    r = client.get("/v1/models", headers={"origin": "http://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_body_limit_with_and_without_content_length() -> None:
    with run_server(ServerConfig(max_request_body_bytes=4096)) as s, s.client() as c:
        big = {"messages": [{"role": "user", "content": "x" * 10_000}]}
        envelope(c.post("/v1/chat/completions", json=big), 413, None)

        def chunks() -> Iterator[bytes]:
            yield b'{"prompt": "'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"}'

        r = c.post("/v1/completions", content=chunks(), headers={"content-type": "application/json"})
        envelope(r, 413, None)


def test_server_errors_carry_no_paths_or_tracebacks(client: httpx.Client) -> None:
    err = APIError(500, 'boom: File "/usr/lib/python3/x.py", line 3\nTraceback (most recent call last): ...')
    assert "/usr/lib" not in err.message and "Traceback" not in err.message
    assert APIError(400, "your stop string /a/b/c").message.endswith("/a/b/c")  # 4xx text is the client's own
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "__crash__"}]})
    assert r.status_code == 500
    text = r.text
    assert "/srv/models" not in text and "secret" not in text and "Traceback" not in text and "<path>" in text
    with client.stream("POST", "/v1/chat/completions", json={"messages": [{"role": "user", "content": "__crash__"}],
                                                            "stream": True}) as s:
        body = "".join(s.iter_text())
    assert '"error"' in body and "/srv/models" not in body and body.rstrip().endswith("[DONE]")


def _chat_with_marker(config: ServerConfig, caplog: pytest.LogCaptureFixture) -> str:
    caplog.set_level(logging.DEBUG)
    with run_server(config) as s, s.client() as c:
        r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "ZEBRA-4711 secret"}],
                                                "max_tokens": 2})
        assert r.status_code == 200
        c.post("/v1/completions", json={"prompt": "OKAPI-0815", "max_tokens": 2, "seed": 2 ** 70})
    return caplog.text


def test_logs_hold_no_prompt_text_by_default(caplog: pytest.LogCaptureFixture) -> None:
    text = _chat_with_marker(ServerConfig(), caplog)
    assert "POST /v1/chat/completions 200" in text  # the access line is there...
    assert "ZEBRA-4711" not in text and "OKAPI-0815" not in text  # ...the prompt is not


def test_log_requests_logs_prompts(caplog: pytest.LogCaptureFixture) -> None:
    text = _chat_with_marker(ServerConfig(log_requests=True), caplog)
    assert "ZEBRA-4711" in text


def test_fan_out_past_the_queue_bound_is_400_not_an_endless_503() -> None:
    """A request whose prompts x n exceed --max-num-queued-reqs could never be admitted: a 503 would
    have well-behaved clients retry forever (seen: 100 prompts x n=128 against a queue of 32)."""
    with run_server(ServerConfig(max_num_queued_reqs=4)) as s, s.client() as c:
        err = envelope(c.post("/v1/chat/completions", json={"messages": MSG, "n": 5, "max_tokens": 2}), 400, "n")
        assert "--max-num-queued-reqs" in err["message"]
        envelope(c.post("/v1/completions", json={"prompt": ["a"] * 5, "max_tokens": 2}), 400, "prompt")
        envelope(c.post("/v1/completions", json={"prompt": "a", "n": 5, "max_tokens": 2}), 400, "n")
        assert c.post("/v1/completions", json={"prompt": ["a"] * 2, "n": 2, "max_tokens": 2}).status_code == 200
