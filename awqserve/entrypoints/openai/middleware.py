"""One pure-ASGI middleware for every request: request id, body-size limit, API key, per-client rate
limit, and the response headers (x-request-id, quantization, memory warning, x-ratelimit-*).

Pure ASGI (not BaseHTTPMiddleware) so streaming responses pass through untouched and client
disconnects still reach the endpoint.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from typing import TYPE_CHECKING

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from awqserve.entrypoints.openai.errors import APIError
from awqserve.entrypoints.openai.limits import api_key_ok, bearer_token, client_key
from awqserve.entrypoints.openai.runner import RequestContext

if TYPE_CHECKING:
    from awqserve.entrypoints.openai.state import AppState

logger = logging.getLogger("awqserve.server")

API_PREFIXES = ("/v1/", "/tokenize", "/detokenize")
QUIET_PATHS = ("/health", "/metrics", "/ui/")  # probed often (or page assets): logged at debug level only
KNOWN_ROUTES = {"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/models", "/tokenize",
                "/detokenize", "/health", "/health/live", "/health/ready", "/metrics", "/version",
                "/openapi.json"}


def is_api(path: str) -> bool:
    return path.startswith(API_PREFIXES) or path == "/v1"


def is_public(path: str) -> bool:
    """Open even when API keys are set: probes, metrics (unless --protect-metrics) and the chat page,
    whose own requests to the API carry the key the user typed."""
    return path.startswith(("/health", "/ui/")) or path in ("/", "/metrics", "/favicon.ico")


def route_label(path: str) -> str:
    if path in KNOWN_ROUTES:
        return path
    if path == "/":
        return "/"
    if path.startswith("/ui/"):
        return "/ui/{file}"
    if path.startswith("/v1/models/"):
        return "/v1/models/{model_id}"
    return "/v1/responses/{response_id}" if path.startswith("/v1/responses/") else "other"


class ServerMiddleware:
    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state, cfg = self.state, self.state.config
        headers = Headers(scope=scope)
        path = scope["path"]
        token = bearer_token(headers.get("authorization"))
        limited = state.limiter is not None and is_api(path)
        host = scope["client"][0] if scope.get("client") else None
        ctx = RequestContext(request_id=headers.get("x-request-id") or uuid.uuid4().hex,
                             client=client_key(token, host) if limited else None,
                             debug=cfg.debug_metrics or headers.get("x-awqserve-debug") == "1")
        scope.setdefault("state", {})["ctx"] = ctx
        status = [0]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                self._add_headers(MutableHeaders(scope=message), ctx)
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self._record(scope, status[0], ctx)

        err = self._gate(scope, headers, token, ctx)
        if err is not None:
            await _send_error(err, send_wrapper)
            return
        await self.app(scope, self._limited_receive(receive, headers), send_wrapper)

    # ---- before the app ----

    def _gate(self, scope: Scope, headers: Headers, token: str | None, ctx: RequestContext) -> APIError | None:
        cfg, path = self.state.config, scope["path"]
        if scope["method"] == "OPTIONS":
            return None
        guarded = not is_public(path) or (path == "/metrics" and cfg.protect_metrics)
        if cfg.api_keys and guarded and not api_key_ok(token, cfg.api_keys):
            self.state.count_reject("invalid_api_key")
            why = "No API key provided" if token is None else "Incorrect API key provided"
            return APIError(401, f"{why}. Send it as 'Authorization: Bearer <key>'.", code="invalid_api_key",
                            headers={"www-authenticate": "Bearer"})
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > cfg.max_request_body_bytes:
            return _too_large(cfg.max_request_body_bytes)
        if ctx.client is not None and self.state.limiter is not None:
            try:
                self.state.limiter.acquire_request(ctx.client)
            except APIError as e:
                self.state.count_reject(e.code or "rate_limited")
                return e
        return None

    def _limited_receive(self, receive: Receive, headers: Headers) -> Receive:
        limit = self.state.config.max_request_body_bytes
        seen = [0]

        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > limit:  # chunked bodies have no content-length: count as they arrive
                    raise _too_large(limit)
            return message

        return wrapped

    # ---- on the way out ----

    def _add_headers(self, h: MutableHeaders, ctx: RequestContext) -> None:
        state = self.state
        h["x-request-id"] = ctx.request_id
        if state.config.replica_id is not None:
            h["x-awqserve-replica"] = state.config.replica_id
        engine = state.engine
        if engine is not None and state.phase in ("ready", "draining"):
            q = engine.info.quant_info if engine.info is not None else None
            if q is not None:
                for key, value in q.as_dict().items():
                    if value is not None:
                        h[f"x-awqserve-quantization-{key.replace('_', '-')}"] = str(value).lower()
            usage = state.kv_usage()
            if usage >= state.config.memory_warning_threshold:
                h["x-awqserve-memory-warning"] = memory_warning(usage, state.config.memory_warning_threshold)
            if ctx.debug:
                h["x-awqserve-kv-cache-usage"] = f"{usage:.4f}"
        if ctx.client is not None and state.limiter is not None:
            for key, value in state.limiter.headers(ctx.client).items():
                h[key] = value

    def _record(self, scope: Scope, status: int, ctx: RequestContext) -> None:
        path = scope["path"]
        if self.state.metrics is not None:
            self.state.metrics.http_response(scope["method"], route_label(path), status)
        if self.state.config.disable_log_requests:
            return
        level = logging.DEBUG if path.startswith(QUIET_PATHS) else logging.INFO
        ms = (time.monotonic() - ctx.arrival) * 1000
        logger.log(level, "%s %s %d %.1fms id=%s", scope["method"], path, status, ms, ctx.request_id)


def memory_warning(usage: float, threshold: float) -> str:
    return (f"KV cache {usage:.0%} used (warning threshold {threshold:.0%}); new requests may queue or be "
            "preempted - lower max_tokens or concurrency")


def _too_large(limit: int) -> APIError:
    return APIError(413, f"Request body too large: the limit is {limit} bytes.", code="request_too_large")


async def _send_error(err: APIError, send: Send) -> None:
    body = json.dumps(err.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in err.response_headers().items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
