"""Overload at 10x capacity (running + queue), mixed chat/completions, streamed and not (issue #16).

Every request ends: a complete 200 (streams end with [DONE], usage when asked) or 429/503 with
Retry-After and the error envelope. The waiting queue never exceeds --max-num-queued-reqs, neither as
the server counts it (/health queue_depth) nor as the engine reports it (vllm:num_requests_waiting):
defect 2 — 400 requests once drove the gauge to 70 with a bound of 32, because admission checked the
queue without reserving a place and counted prompts where the engine counts sequences. Afterwards every
gauge, the KV cache and the engine's bookkeeping are back to zero and /health is 200.
"""
from __future__ import annotations

import asyncio

import httpx

from _idle import wait_idle
from _server import CAPACITY, MAX_NUM_SEQS, MAX_QUEUED, StressServer
from conftest import scaled
from stress_load import awqserve_gauges, overload


def _model(server: StressServer) -> str:
    return str(httpx.get(server.base_url + "/v1/models", timeout=10).json()["data"][0]["id"])


def test_overload_every_request_ends_and_the_queue_bound_holds(stress_server: StressServer) -> None:
    n = 10 * CAPACITY
    report = asyncio.run(overload(stress_server.base_url, _model(stress_server), requests=n,
                                  max_tokens=int(scaled(8, 64)), timeout=float(scaled(120, 600)),
                                  read_gauges=awqserve_gauges))
    s = report.summary()
    assert s["bad"] == 0, s
    assert s["ok"] + s["rejected"] == n, s
    assert s["ok"] >= MAX_NUM_SEQS, s  # the server did serve at capacity, not refuse everything
    assert set(s["statuses"]) <= {200, 429, 503}, s
    assert s["peak_waiting"] <= MAX_QUEUED, s
    assert s["peak_queue_depth"] <= MAX_QUEUED, s
    wait_idle(stress_server, timeout=30)
