"""Concurrency on the shared server: 16 parallel streams all end with [DONE]; a disconnect frees its request."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from conftest import ServerProcess

MSG = [{"role": "user", "content": "Count to five."}]


def test_sixteen_concurrent_streams(server: ServerProcess, model_name: str) -> None:
    async def one(client: httpx.AsyncClient, i: int) -> tuple[list[str], dict[str, Any]]:
        body = {"model": model_name, "messages": MSG, "max_tokens": 8, "stream": True, "seed": i,
                "stream_options": {"include_usage": True}, "ignore_eos": True}
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            lines = [x[6:] async for x in r.aiter_lines() if x.startswith("data: ")]
        return lines, json.loads(lines[-2])

    async def main() -> list[tuple[list[str], dict[str, Any]]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=300) as client:
            return await asyncio.gather(*(one(client, i) for i in range(16)))

    results = asyncio.run(main())
    assert len(results) == 16
    for lines, usage_chunk in results:
        assert lines[-1] == "[DONE]" and usage_chunk["usage"]["completion_tokens"] == 8
    assert len({json.loads(lines[0])["id"] for lines, _ in results}) == 16


def _running(http: httpx.Client) -> float:
    for fam in text_string_to_metric_families(http.get("/metrics").text):
        if fam.name == "vllm:num_requests_running":
            return sum(s.value for s in fam.samples)
    raise AssertionError("vllm:num_requests_running missing")


def test_disconnect_mid_stream_frees_the_request(server: ServerProcess, http: httpx.Client, model_name: str) -> None:
    body = {"model": model_name, "prompt": "Tell me a long story.", "max_tokens": 400, "stream": True,
            "ignore_eos": True}
    with httpx.Client(base_url=server.url, timeout=60) as own, own.stream("POST", "/v1/completions", json=body) as r:
        lines = r.iter_lines()
        for _ in range(3):
            next(lines)  # tokens are flowing: the request is running
        assert _running(http) >= 1
    deadline = time.monotonic() + 10
    while _running(http) != 0 or http.get("/health").json()["in_flight"] != 0:
        assert time.monotonic() < deadline, "the aborted request is still running"
        time.sleep(0.05)
