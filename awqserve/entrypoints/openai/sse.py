"""Server-sent events: framing, the error-event convention, and a response that notices disconnects.

Starlette's StreamingResponse only notices a gone client when a write fails; a request still waiting
in the engine queue writes nothing, so it would linger. `SSEResponse` listens for `http.disconnect`
alongside the stream and cancels the stream at once (which aborts the engine requests).
"""
from __future__ import annotations

import asyncio
import json
from contextlib import aclosing
from typing import Any, AsyncGenerator, AsyncIterator, Callable, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from awqserve.entrypoints.openai.errors import APIError
from awqserve.entrypoints.openai.runner import wait_disconnect

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def sse_event(obj: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def sse_error(err: APIError) -> bytes:
    """An error after the 200 went out: `data: {"error": {...}}` (the openai SDK raises on it)."""
    body = err.body()
    body["error"]["status"] = err.status  # extra key: lets clients tell a 503 from a 504
    return sse_event(body)


async def finish_stream(events: AsyncGenerator[bytes, None],
                        final_chunk: Callable[[], Mapping[str, Any]] | None) -> AsyncIterator[bytes]:
    """The end every OpenAI stream shares (OPENAI_API.md §3): relay `events`; an APIError raised after
    the 200 went out becomes an error event; otherwise `final_chunk()` (the usage chunk) when given;
    `[DONE]` in both cases. Closing this generator closes `events` (which aborts the engine work)."""
    try:
        async with aclosing(events) as evs:
            async for ev in evs:
                yield ev
    except APIError as e:
        yield sse_error(e)
        yield DONE
        return
    if final_chunk is not None:
        yield sse_event(final_chunk())
    yield DONE


class SSEResponse(Response):
    """ASGI response streaming `body` (bytes events) with status 200, cancelled on client disconnect.

    A starlette `Response` by type (routes return it) whose ASGI call is entirely its own."""

    def __init__(self, body: AsyncIterator[bytes], headers: Mapping[str, str] | None = None) -> None:
        self.events = body
        self.status_code = 200
        self.background = None
        self.sse_headers = {**SSE_HEADERS, **(headers or {})}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = [(b"content-type", b"text/event-stream; charset=utf-8")]
        raw += [(k.lower().encode(), str(v).encode()) for k, v in self.sse_headers.items()]
        stream = asyncio.ensure_future(self._stream(send, raw))
        watcher = asyncio.ensure_future(wait_disconnect(receive))
        try:
            await asyncio.wait({stream, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            if not stream.done():
                stream.cancel()  # client went away (or we are cancelled): stop generating now
            await asyncio.wait({stream})
        exc = None if stream.cancelled() else stream.exception()
        if exc is not None and not isinstance(exc, OSError):  # a write to a closed socket is just a disconnect
            raise exc

    async def _stream(self, send: Send, raw_headers: list[tuple[bytes, bytes]]) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
        try:
            async for chunk in self.events:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                await aclose()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
