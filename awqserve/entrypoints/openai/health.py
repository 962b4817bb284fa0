"""Probes: /health (status + figures), /health/live (process serves), /health/ready (take traffic?), /version.

While loading, /health says what start-up is doing: `{"status": "loading", "phase": "compiling",
"progress": 0.5, "eta_s": 12.0, …}` (phases in engine/progress.py order; progress is of the phase).

Liveness and readiness are kept apart: a busy server (queue full) is alive and reports itself on
/health with 200, but /health/ready answers 503 so load balancers send traffic elsewhere.
"""
from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from awqserve.entrypoints.openai.state import AppState, get_state
from awqserve.version import __version__


def health_body(state: AppState) -> dict[str, Any]:
    phase = state.phase
    body: dict[str, Any] = {"status": "ok" if phase == "ready" else phase}
    if phase == "loading":
        body.update(state.loading_progress())
        return body
    if phase == "dead":
        body["error"] = state.dead_reason()
        return body
    engine = state.require_engine()
    snap = engine.stats.snapshot()
    body.update({
        "model": state.model_name, "ready": phase == "ready" and not state.queue_full(),
        "uptime_s": round(time.monotonic() - state.started_at, 3),
        "queue_depth": state.queue_depth(), "max_num_queued_reqs": state.config.max_num_queued_reqs,
        "num_running": int(snap.num_running), "kv_cache_usage": round(float(snap.kv_usage), 4),
        "max_model_len": state.info.max_model_len, "in_flight": state.tracker.api_requests,
    })
    if state.debug_engine:
        body["engine_debug"] = engine_debug(state)
    return body


def engine_debug(state: AppState) -> dict[str, Any]:
    """With AWQSERVE_DEBUG_ENGINE=1 (tests): what must all be 0 on an idle server, as of the last step."""
    engine = state.require_engine()
    snap = engine.stats.snapshot()
    return {"kv_blocks_used": snap.kv_blocks_used, "state_slots_used": snap.state_slots_used,
            "tracked_requests": snap.tracked_requests, "engine_streams": int(getattr(engine, "num_streams", 0)),
            "reserved_seqs": state.tracker.reserved_seqs, "engine_requests": state.tracker.engine_requests,
            "failures": dict(snap.failures)}


async def health(request: Request) -> Response:
    state = get_state(request)
    body = health_body(state)
    status = 200 if body["status"] == "ok" else 503
    return JSONResponse(body, status_code=status, headers=None if status == 200 else {"retry-after": "5"})


async def live(request: Request) -> Response:
    return JSONResponse({"status": "alive"})


async def ready(request: Request) -> Response:
    state = get_state(request)
    phase = state.phase
    if phase == "ready" and state.queue_full():
        phase = "overloaded"
    if phase == "ready":
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": phase}, status_code=503, headers={"retry-after": "5"})


async def version(request: Request) -> Response:
    return JSONResponse({"version": __version__})
