"""The two Ray Serve deployments: `AwqEngine` (one awqserve engine + its app per replica) and
`AwqIngress` (Ray Serve's FastAPI ingress: forwards each HTTP request to an engine replica).

The ingress is a thin relay; everything an endpoint does happens in the replica's own awqserve app
(`create_app`), so the API, errors, auth and headers are the single-process server's. The ingress
exists because Ray's HTTP proxy streams the body to a replica only after choosing it; the ingress
has read the body first, so the prefix router (`router.py`) can choose by prompt.
"""
# No `from __future__ import annotations`: FastAPI reads the route signatures at runtime (string
# annotations on Ray Serve ingress methods turn `request: Request` into a query parameter).
import asyncio
import dataclasses
import logging
from typing import Any, AsyncIterator, cast

from fastapi import FastAPI
from ray import serve
from ray.exceptions import RayActorError, RayError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message

from awqserve.config.engine_config import EngineConfig
from awqserve.entrypoints.openai.app import create_app
from awqserve.entrypoints.openai.errors import APIError, service_unavailable
from awqserve.entrypoints.openai.server_config import ServerConfig
from awqserve.entrypoints.openai.state import AppState
from awqserve.ray.config import RayConfig
from awqserve.ray.prefix import prompt_text
from awqserve.ray.relay import ProxiedRequest, RelayResponse, run_app
from awqserve.ray.router import routing_stats

logger = logging.getLogger("awqserve.ray")
ROUTING_PATH = "/awqserve/routing"  # the ingress's own route: prefix-routing counters (JSON)
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]


class AwqEngine:
    """One replica: the awqserve app with its engine, loaded before Ray routes to it.

    The constructor returns only once the model is ready (Ray keeps a replica out of routing until
    then); `check_health` fails once the engine is dead, so Ray replaces the replica.
    """

    async def __init__(self, server: ServerConfig, engine: EngineConfig,  # type: ignore[misc]
                       cfg: RayConfig) -> None:  # Ray Serve awaits an async constructor
        ctx = serve.get_replica_context()
        self.replica_id = ctx.replica_id.unique_id
        self.app = create_app(dataclasses.replace(server, replica_id=self.replica_id), engine)
        self.state: AppState = self.app.state.awqserve
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()  # starts the engine's boot, as uvicorn's lifespan would
        while self.state.phase == "loading":
            await asyncio.sleep(0.1)
        if self.state.phase == "dead":
            raise RuntimeError(f"replica {self.replica_id}: model failed to load: {self.state.dead_reason()}")
        self._serve_metrics(cfg, _rank(ctx))
        logger.info("replica %s ready", self.replica_id)

    def _serve_metrics(self, cfg: RayConfig, rank: int) -> None:
        """Each replica's own scrape target, when asked for (`--replica-metrics-port`)."""
        if cfg.metrics_port <= 0 or self.state.metrics is None:
            return
        from prometheus_client import start_http_server

        port = cfg.metrics_port + rank
        try:
            start_http_server(port, addr=cfg.metrics_host, registry=self.state.metrics.exposed())
            logger.info("replica %s: metrics on %s:%d", self.replica_id, cfg.metrics_host, port)
        except OSError as e:  # a port still held by a replica being replaced: scrape through the proxy
            logger.warning("replica %s: metrics port %d unavailable: %s", self.replica_id, port, e)

    async def forward(self, req: ProxiedRequest) -> AsyncIterator[Message]:
        """The request through this replica's app; yields its ASGI messages (streamed to the ingress)."""
        async for message in run_app(self.app, req):
            yield message

    async def check_health(self) -> None:
        """Ray's periodic probe: the engine's readiness (draining still counts as alive)."""
        phase = self.state.phase
        if phase not in ("ready", "draining"):
            raise RuntimeError(f"replica {self.replica_id} is {phase}: {self.state.dead_reason()}")

    async def __del__(self) -> None:
        """Graceful stop (scale-down, redeploy, shutdown): stop admitting, then stop the engine."""
        self.state.draining = True
        try:
            await self._lifespan.__aexit__(None, None, None)
        except Exception:  # noqa: BLE001 - going away regardless
            logger.exception("replica %s: engine shutdown failed", self.replica_id)


def _rank(ctx: Any) -> int:
    rank = getattr(ctx, "rank", 0)
    return int(getattr(rank, "rank", rank) or 0)


ingress_app = FastAPI(title="awqserve-ingress", docs_url=None, redoc_url=None, openapi_url=None)


@serve.ingress(ingress_app)
class AwqIngress:
    """Ray Serve's HTTP entry: every path is relayed to an engine replica chosen by the prefix router.

    Failures before the replica answered become awqserve error envelopes: all replicas full and
    the wait queue too (`max_queued_requests`) → 503 `replicas_busy` + Retry-After; no replica
    alive or it died → 503 `replica_unavailable` + Retry-After.
    """

    def __init__(self, engine: "DeploymentHandle[Any]", server: ServerConfig) -> None:
        self.engine = engine.options(stream=True)
        self.max_body = server.max_request_body_bytes

    @ingress_app.get(ROUTING_PATH)
    async def routing(self) -> JSONResponse:
        return JSONResponse(routing_stats())

    @ingress_app.api_route("/{path:path}", methods=_METHODS)
    async def relay(self, request: Request) -> Response:
        req = await self._proxied(request)
        try:
            stream = cast("DeploymentResponseGenerator[Message]", self.engine.forward.remote(req))
            first = await stream.__anext__()
        except BackPressureError:
            return service_unavailable("Every replica is at capacity and the wait queue is full. Retry "
                                       "later or lower your request rate.", "replicas_busy", 1).to_response()
        except (RayActorError, DeploymentUnavailableError, RayError) as e:
            logger.warning("no replica could take %s %s: %s", req.method, req.path, e)
            return service_unavailable(f"No replica could serve the request ({type(e).__name__}); retry "
                                       "shortly.", "replica_unavailable", 1).to_response()
        except StopAsyncIteration:
            return APIError(502, "The replica sent no response.", code="replica_failed").to_response()
        return RelayResponse(first, stream)

    async def _proxied(self, request: Request) -> ProxiedRequest:
        scope = request.scope
        body = await self._body(request)
        client = scope.get("client")
        return ProxiedRequest(
            method=scope["method"], path=scope["path"], query_string=scope.get("query_string", b""),
            headers=tuple((bytes(k), bytes(v)) for k, v in scope["headers"]), body=body,
            client=(str(client[0]), int(client[1])) if client else None, scheme=scope.get("scheme", "http"),
            http_version=scope.get("http_version", "1.1"), prefix_text=prompt_text(scope["path"], body) or "")

    async def _body(self, request: Request) -> bytes:
        """The body, cut one byte past the limit: the replica's middleware answers 413 for it."""
        chunks, size = [], 0
        async for chunk in request.stream():
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_body:
                break
        return b"".join(chunks)
