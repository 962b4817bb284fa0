"""Carrying one HTTP request from the ingress to an engine replica's awqserve app and its response back.

The ingress (Ray Serve's FastAPI ingress behind the HTTP proxy) reads the body, wraps the request as a
`ProxiedRequest` and calls the engine deployment through a streaming handle; the prefix router reads
`prefix_text` from it. On the replica, `run_app` plays the request into the real awqserve ASGI app
and yields the ASGI messages it sends; the ingress's `RelayResponse` sends them on unchanged. So
every endpoint, error envelope, header, auth check and SSE stream is the single-process server's own.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, AsyncIterator

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from awqserve.entrypoints.openai.errors import APIError
from awqserve.entrypoints.openai.sse import DONE, sse_error

logger = logging.getLogger("awqserve.ray")


@dataclass(frozen=True)
class ProxiedRequest:
    """What the replica needs to rebuild the request: the ASGI scope's essentials and the whole body.
    `prefix_text` is the prompt's start, for routing only (the replica parses the body itself)."""

    method: str
    path: str
    query_string: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    client: tuple[str, int] | None
    scheme: str = "http"
    http_version: str = "1.1"
    prefix_text: str = ""

    def scope(self) -> Scope:
        return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
                "http_version": self.http_version, "method": self.method, "scheme": self.scheme,
                "path": self.path, "raw_path": self.path.encode(), "root_path": "",
                "query_string": self.query_string, "headers": list(self.headers),
                "client": self.client, "server": None}


async def run_app(app: ASGIApp, req: ProxiedRequest) -> AsyncIterator[Message]:
    """Run `req` through `app`, yielding each ASGI message the app sends, in order.

    The body is delivered at once; after it the app sees `http.disconnect` only when this generator
    is closed early (the caller went away), which makes the app abort its engine requests exactly
    as it does for a client that hangs up on the single-process server.
    """
    out: asyncio.Queue[Message | None] = asyncio.Queue()
    gone = asyncio.Event()
    body_sent = False

    async def receive() -> Message:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": req.body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        await out.put(message)

    async def call() -> None:
        try:
            await app(req.scope(), receive, send)
        finally:
            await out.put(None)

    task = asyncio.ensure_future(call())
    try:
        while (message := await out.get()) is not None:
            yield message
        await task  # re-raises what the app raised after its last message
    finally:
        gone.set()  # the app notices the disconnect and aborts cleanly ...
        if not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), 5.0)
            except (asyncio.TimeoutError, asyncio.CancelledError, Exception):  # noqa: BLE001
                task.cancel()  # ... or is cut off if it does not within 5 s


class RelayResponse(Response):
    """Sends the replica's ASGI messages (`first` is its `http.response.start`, already received).

    If the replica fails after the status went out (its process died mid-stream), an SSE response
    ends with an OpenAI error event and `[DONE]`, any other with the body cut short: the client
    never waits on a dead replica. Closing early (client gone) cancels the replica's work.
    """

    def __init__(self, first: Message, rest: Any) -> None:
        # Ray's proxy adds x-request-id itself (the same id: it put it on the request the app saw)
        headers = [(k, v) for k, v in first.get("headers", []) if k.lower() != b"x-request-id"]
        self.first = {**first, "headers": headers}
        self.rest = rest  # a Ray Serve DeploymentResponseGenerator
        self.status_code = int(first.get("status", 200))
        self.background = None

    def _is_sse(self) -> bool:
        return any(k.lower() == b"content-type" and v.startswith(b"text/event-stream")
                   for k, v in self.first.get("headers", []))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(self.first)
        finished = False
        try:
            async for message in self.rest:
                await send(message)
                if message["type"] == "http.response.body" and not message.get("more_body", False):
                    finished = True
        except Exception as e:  # noqa: BLE001 - replica lost mid-response: end it, do not hang
            logger.warning("replica failed mid-response: %s: %s", type(e).__name__, e)
            if not finished:
                await self._end_with_error(send, e)
            finished = True
        finally:
            if not finished:
                self.rest.cancel()  # we were cancelled (client gone): stop the replica's work too
        if not finished:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _end_with_error(self, send: Send, err: Exception) -> None:
        tail = b""
        if self._is_sse():
            api = APIError(503, f"The replica serving this request failed ({type(err).__name__}); "
                                "retry the request.", code="replica_failed", retry_after=1)
            tail = sse_error(api) + DONE
        await send({"type": "http.response.body", "body": tail, "more_body": False})
