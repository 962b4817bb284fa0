"""Waiting for a stress server to be idle again, and checking that nothing leaked on the way."""
from __future__ import annotations

import time
from typing import Any

from _server import StressServer
from stress_load import metric_value


def idle_figures(server: StressServer) -> dict[str, Any]:
    """Gauges, queue depth and the engine's exact bookkeeping (`engine_debug` in /health)."""
    health = server.health()
    text = server.metrics_text()
    debug = health.get("engine_debug", {})
    return {"health": health["_status"], "running": metric_value(text, "vllm:num_requests_running"),
            "waiting": metric_value(text, "vllm:num_requests_waiting"),
            "kv_usage": metric_value(text, "vllm:kv_cache_usage_perc"), "queue_depth": health.get("queue_depth"),
            "in_flight": health.get("in_flight"), **debug}


def is_idle(f: dict[str, Any]) -> bool:
    keys = ("running", "waiting", "kv_usage", "queue_depth", "in_flight", "kv_blocks_used", "state_slots_used",
            "tracked_requests", "engine_streams", "reserved_seqs", "engine_requests")
    return f["health"] == 200 and all(not f.get(k) for k in keys)


def wait_idle(server: StressServer, timeout: float = 30.0) -> tuple[float, dict[str, Any]]:
    """Seconds until every figure is back to zero (and /health is 200); fails with the last figures."""
    t0 = time.monotonic()
    f: dict[str, Any] = {}
    while time.monotonic() - t0 < timeout:
        f = idle_figures(server)
        if is_idle(f):
            return time.monotonic() - t0, f
        time.sleep(0.02)
    raise AssertionError(f"not idle after {timeout}s: {f}")
