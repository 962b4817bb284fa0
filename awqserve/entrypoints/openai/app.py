"""`create_app`: routes, middleware and lifespan of the OpenAI-compatible server.

The lifespan starts the engine in the background and returns at once, so uvicorn binds the socket
while the model loads (/health answers 503 "loading" meanwhile).
"""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from awqserve.config.engine_config import EngineConfig
from awqserve.engine.omp_threads import serial_torch_here
from awqserve.engine.protocol import EngineClient
from awqserve.entrypoints.openai import health, serving_models, serving_responses
from awqserve.entrypoints.openai.errors import install_exception_handlers
from awqserve.entrypoints.openai.metrics import CONTENT_TYPE, ServerMetrics
from awqserve.entrypoints.openai.openapi import build_document
from awqserve.entrypoints.openai.middleware import ServerMiddleware, memory_warning
from awqserve.entrypoints.openai.serving_chat import create_chat_completion
from awqserve.entrypoints.openai.serving_completion import create_completion
from awqserve.entrypoints.openai.server_config import ServerConfig
from awqserve.entrypoints.openai.state import AppState, EngineFactory, get_state
from awqserve.ui import add_ui_routes

logger = logging.getLogger("awqserve.server")


def create_app(config: ServerConfig, engine_config: EngineConfig,
               engine_factory: EngineFactory | None = None) -> FastAPI:
    """The ASGI app. `engine_factory(engine_config)` builds the engine (default: AsyncEngine)."""
    state = AppState(config, engine_config, engine_factory)
    if not config.disable_metrics:
        state.metrics = ServerMetrics(state)
    app = FastAPI(title="awqserve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=_lifespan)
    app.state.awqserve = state
    install_exception_handlers(app)
    _add_routes(app, config)
    app.add_middleware(ServerMiddleware, state=state)
    if config.allowed_origins:  # added last = outermost, so preflights and error responses get CORS headers
        app.add_middleware(CORSMiddleware, allow_origins=list(config.allowed_origins),
                           allow_methods=list(config.allowed_methods), allow_headers=list(config.allowed_headers),
                           allow_credentials=config.allow_credentials,
                           expose_headers=["x-request-id", "retry-after"])
    return app


def _add_routes(app: FastAPI, config: ServerConfig) -> None:
    r = app.router
    r.add_route("/v1/chat/completions", create_chat_completion, methods=["POST"])
    r.add_route("/v1/completions", create_completion, methods=["POST"])
    r.add_route("/v1/responses", serving_responses.create_response, methods=["POST"])
    r.add_route("/v1/responses/{response_id}", serving_responses.retrieve_response, methods=["GET"])
    r.add_route("/v1/responses/{response_id}", serving_responses.delete_response, methods=["DELETE"])
    r.add_route("/v1/models", serving_models.list_models, methods=["GET"])
    r.add_route("/v1/models/{model_id:path}", serving_models.retrieve_model, methods=["GET"])
    r.add_route("/tokenize", serving_models.tokenize, methods=["POST"])
    r.add_route("/detokenize", serving_models.detokenize, methods=["POST"])
    r.add_route("/health", health.health, methods=["GET"])
    r.add_route("/health/live", health.live, methods=["GET"])
    r.add_route("/health/ready", health.ready, methods=["GET"])
    r.add_route("/version", health.version, methods=["GET"])
    r.add_route("/openapi.json", _openapi, methods=["GET"])
    if not config.disable_metrics:
        r.add_route("/metrics", _metrics, methods=["GET"])
    if config.ui:  # the chat page at / (static files; it talks to the API above like any client)
        add_ui_routes(r)


async def _openapi(request: Request) -> Response:
    doc = build_document(get_state(request).config)
    return JSONResponse(doc)


async def _metrics(request: Request) -> Response:
    metrics = get_state(request).metrics
    assert metrics is not None  # the route exists only when metrics are on
    return Response(metrics.render(), media_type=CONTENT_TYPE)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: AppState = app.state.awqserve
    serial_torch_here()  # the HTTP loop's thread never gets an OpenMP team (engine/omp_threads.py)
    tasks = [asyncio.create_task(state.boot()), asyncio.create_task(_memory_monitor(state))]
    try:
        yield
    finally:
        for t in tasks:
            t.cancel()
        await _shutdown_engine(state.engine)


async def _shutdown_engine(engine: EngineClient | None) -> None:
    if engine is None:
        return
    try:
        await asyncio.to_thread(engine.shutdown)
    except Exception:  # noqa: BLE001 - shutting down anyway; log and go
        logger.exception("engine shutdown failed")


async def _memory_monitor(state: AppState, period: float = 1.0) -> None:
    """Log once each time KV usage crosses the warning threshold (re-armed 5 points below it)."""
    threshold, warned = state.config.memory_warning_threshold, False
    while True:
        await asyncio.sleep(period)
        if state.phase not in ("ready", "draining"):
            continue
        usage = state.kv_usage()
        if usage >= threshold and not warned:
            warned = True
            logger.warning("memory: %s", memory_warning(usage, threshold))
            if state.metrics is not None:
                state.metrics.memory_warnings.inc()
        elif usage < threshold - 0.05:
            warned = False
