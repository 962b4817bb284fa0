"""SIGTERM drains: readiness goes 503, new work is refused, the in-flight stream completes, exit status 0."""
from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx

from conftest import start_server


def test_sigterm_drains_in_flight_stream(model_dir: Path) -> None:
    proc = start_server(model_dir, ["--shutdown-timeout", "60"])
    try:
        lines: list[str] = []
        started = threading.Event()

        def stream() -> None:
            body = {"prompt": "Once upon a time", "max_tokens": 24, "stream": True, "ignore_eos": True}
            with httpx.Client(base_url=proc.url, timeout=120) as c, c.stream("POST", "/v1/completions",
                                                                             json=body) as r:
                for line in r.iter_lines():
                    started.set()
                    lines.append(line)

        t = threading.Thread(target=stream)
        t.start()
        assert started.wait(60)
        proc.signal(signal.SIGTERM)
        with httpx.Client(base_url=proc.url, timeout=10) as c:
            ready = c.get("/health/ready")
            refused = c.post("/v1/completions", json={"prompt": "late", "max_tokens": 2})
        t.join(120)
        assert proc.proc.wait(60) == 0
        assert ready.status_code == 503 and ready.json()["status"] == "draining"
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
        data = [x[6:] for x in lines if x.startswith("data: ")]
        assert data[-1] == "[DONE]" and '"finish_reason":"length"' in data[-2]
    finally:
        proc.stop()

