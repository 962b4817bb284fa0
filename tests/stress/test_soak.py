"""Soak at capacity (issue #16; bench/soak.py, 60 s here, 10 minutes at full size): no errors, server RSS
grows < 10 % from the first third to the last, throughput in the last third >= 90 % of the first.

Throughput is compared per server CPU second: on a shared box a neighbour can take the CPU for a
third and depress tokens/s without anything being wrong in the server; tokens per CPU second fall only
when the server does more work per token (a growing structure, a leak being walked)."""
from __future__ import annotations

import asyncio

import httpx

from _idle import wait_idle
from _server import MAX_NUM_SEQS, StressServer
from conftest import scaled
from soak import soak


def test_soak_at_capacity(stress_server: StressServer) -> None:
    model = httpx.get(stress_server.base_url + "/v1/models", timeout=10).json()["data"][0]["id"]
    result = asyncio.run(soak(stress_server.base_url, stress_server.proc.pid, model,
                              duration=float(scaled(60, 600)), concurrency=MAX_NUM_SEQS, max_tokens=32))
    print(result)
    assert result["errors"] == 0, result
    assert result["requests"] >= 3 * MAX_NUM_SEQS, result
    assert result["rss_growth"] is not None and result["rss_growth"] < 0.10, result
    assert result.get("per_cpu_ratio") is not None and result["per_cpu_ratio"] >= 0.90, result
    wait_idle(stress_server, timeout=30)
