"""Connection time limits uvicorn does not have: slow or stalled clients are dropped, one log line each.

uvicorn's h11 protocol closes an idle keep-alive connection (`timeout_keep_alive`) but waits forever
for a request whose headers or body never finish, and for a client that never reads its response
(the stream stalls in `drain()`, holding an engine slot). `GuardedH11Protocol` adds three timers:

- header: from the connection (or the first bytes of a keep-alive connection's next request) to a
  complete request head;
- body: no request-body bytes for this long while the body is incomplete (and we are reading);
- write stall: our writes stay paused (the client's window is full) for this long.

When one fires the connection is aborted; the app sees `http.disconnect`, so a generation is aborted
and its KV blocks freed on the engine's next step. Limits are explicit (`ConnectionLimits`), with
environment overrides read once when the server starts (tests use short ones).
"""
from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger("awqserve.server")


@dataclass(frozen=True)
class ConnectionLimits:
    """Seconds; every field is set explicitly on the uvicorn server (server.py)."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    write_stall_timeout: float = 60.0
    keep_alive: float = 5.0
    max_incomplete_event_bytes: int = 64 * 1024  # request line + headers; larger → 400

    @classmethod
    def from_env(cls) -> "ConnectionLimits":
        """Defaults, overridden by AWQSERVE_HEADER_TIMEOUT_S / _BODY_ / _WRITE_STALL_ / _KEEP_ALIVE_."""
        d = cls()

        def get(name: str, default: float) -> float:
            value = os.environ.get(f"AWQSERVE_{name}_TIMEOUT_S")
            return float(value) if value else default

        return cls(get("HEADER", d.header_timeout), get("BODY", d.body_timeout),
                   get("WRITE_STALL", d.write_stall_timeout), get("KEEP_ALIVE", d.keep_alive))


class GuardedH11Protocol(H11Protocol):
    """uvicorn's H11Protocol plus header, body and write-stall timeouts (`limits`, set by server.py)."""

    limits = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._seen_cycle: object | None = None  # the request whose head arrived (stops the header timer)

    # -- the three timers ------------------------------------------------------------------------
    def _arm(self, seconds: float, on_fire: Callable[[], None]) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, on_fire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _drop(self, why: str) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        host = "%s:%d" % self.client if self.client else "unknown client"
        logger.warning("dropped connection from %s: %s", host, why)
        self.transport.abort()  # connection_lost → the app's receive() answers http.disconnect

    def _on_header_timeout(self) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            self._timer = None
            return  # a pipelined request started meanwhile: it is being served
        self._drop(f"request headers incomplete after {self.limits.header_timeout:g}s")

    def _on_body_timeout(self) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not cycle.response_complete and not self.flow.read_paused:
            self._drop(f"request body stalled for {self.limits.body_timeout:g}s")

    def _on_write_stall(self) -> None:
        if self.flow.write_paused:
            self._drop(f"client read nothing for {self.limits.write_stall_timeout:g}s")

    # -- uvicorn's hooks -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.header_timeout, self._on_header_timeout)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        cycle = self.cycle
        if cycle is None or cycle is self._seen_cycle and cycle.response_complete:
            if self._timer is None:  # the first bytes of a keep-alive connection's next request head
                self._arm(self.limits.header_timeout, self._on_header_timeout)
            return  # still reading a request head: the header timer keeps running
        self._seen_cycle = cycle
        if cycle.more_body and not cycle.response_complete:
            self._arm(self.limits.body_timeout, self._on_body_timeout)
        elif not self.flow.write_paused:
            self._disarm()

    def on_response_complete(self) -> None:
        # An idle keep-alive connection is uvicorn's to close (silently, `timeout_keep_alive`); the
        # header timer starts again with the next request's first bytes (data_received).
        self._disarm()
        super().on_response_complete()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._arm(self.limits.write_stall_timeout, self._on_write_stall)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


class _BodyAbandoned(BaseException):
    """The client left (or was dropped) before its request body was complete. A BaseException so the
    app's error handlers (which log tracebacks for any Exception) let it pass to `QuietDisconnects`."""


class QuietDisconnects:
    """Outermost ASGI wrapper: a disconnect while the request body is still arriving ends the request
    silently (the drop itself was logged once, above) instead of surfacing as starlette's
    ClientDisconnect traceback. Disconnects after the body are delivered as usual (they abort streams)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = False

        async def guarded() -> Message:
            nonlocal body_done
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_done = True
            elif message["type"] == "http.disconnect" and not body_done:
                raise _BodyAbandoned()
            return message

        try:
            await self.app(scope, guarded, send)
        except _BodyAbandoned:
            logger.debug("%s %s: client gone before its body was complete", scope.get("method"), scope.get("path"))


def protocol_with(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """A protocol class bound to `limits` (uvicorn instantiates the class per connection)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})
