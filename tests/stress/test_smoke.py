"""The shared stress server answers and reports the engine's bookkeeping."""
from __future__ import annotations

from _server import StressServer


def test_server_is_healthy_and_idle(stress_server: StressServer) -> None:
    body = stress_server.health()
    assert body["_status"] == 200 and body["status"] == "ok"
    assert body["num_running"] == 0 and body["queue_depth"] == 0
