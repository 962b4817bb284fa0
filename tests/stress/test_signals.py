"""Signals (issue #16): SIGTERM during 8 long streams drains them (each ends with [DONE]), refuses new work
with 503 meanwhile and exits 0 in time; after SIGKILL a restart on the same port is healthy at once (no
stale lock, cache or socket stands in the way)."""
from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Callable

import httpx

from _server import MAX_NUM_SEQS, StressServer
from conftest import scaled

STREAMS = MAX_NUM_SEQS


def _stream(url: str, model: str, max_tokens: int, started: threading.Event, out: list[list[str]]) -> None:
    body = {"model": model, "prompt": "Tell me a long story.", "max_tokens": max_tokens, "stream": True,
            "ignore_eos": True}
    lines: list[str] = []
    try:
        with httpx.Client(base_url=url, timeout=300) as c, c.stream("POST", "/v1/completions", json=body) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    started.set()
                    lines.append(line[6:])
    finally:
        out.append(lines)


def test_sigterm_drains_long_streams(start_stress_server: Callable[..., StressServer]) -> None:
    server = start_stress_server(flags=["--shutdown-timeout", "300"])
    model = httpx.get(server.base_url + "/v1/models", timeout=10).json()["data"][0]["id"]
    max_tokens = int(scaled(48, 256))
    events = [threading.Event() for _ in range(STREAMS)]
    results: list[list[str]] = []
    threads = [threading.Thread(target=_stream, args=(server.base_url, model, max_tokens, e, results))
               for e in events]
    for t in threads:
        t.start()
    assert all(e.wait(120) for e in events)  # every stream is generating
    t0 = time.monotonic()
    server.signal(signal.SIGTERM)
    time.sleep(0.2)
    refused = httpx.post(server.base_url + "/v1/completions", timeout=10,
                         json={"model": model, "prompt": "late", "max_tokens": 2})
    assert refused.status_code == 503 and "retry-after" in refused.headers, refused.text
    assert refused.json()["error"]["code"] == "shutting_down"
    assert server.proc.wait(float(scaled(120, 300))) == 0
    exit_s = time.monotonic() - t0
    for t in threads:
        t.join(30)
    assert len(results) == STREAMS
    for lines in results:
        assert lines[-1] == "[DONE]" and '"finish_reason":"length"' in lines[-2], lines[-3:]
    assert exit_s < float(scaled(120, 300))


def test_restart_after_sigkill_is_healthy(stress_model_dir: Path) -> None:
    first = StressServer(stress_model_dir).wait_ready()
    try:
        model = httpx.get(first.base_url + "/v1/models", timeout=10).json()["data"][0]["id"]
        # killed mid-generation, with a connection open
        client = httpx.Client(base_url=first.base_url, timeout=60)
        with client.stream("POST", "/v1/completions", json={"model": model, "prompt": "x", "max_tokens": 200,
                                                              "stream": True}) as r:
            next(r.iter_lines())
            first.signal(signal.SIGKILL)
            assert first.proc.wait(30) == -signal.SIGKILL
        client.close()
    finally:
        first.stop()
    second = StressServer(stress_model_dir, port=first.port).wait_ready(timeout=300)
    try:
        r = httpx.post(second.base_url + "/v1/completions", timeout=60,
                       json={"model": model, "prompt": "after restart", "max_tokens": 4})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4
        assert second.health()["status"] == "ok"
    finally:
        assert second.stop() == 0
