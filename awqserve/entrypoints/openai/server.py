"""Running the app under uvicorn with a graceful drain on SIGTERM/SIGINT.

First signal: stop admitting (ready → 503, new generation requests → 503), let in-flight requests
finish for up to `--shutdown-timeout`, abort what is left (streams end with an error event), then
exit 0. A second signal exits at once. Uvicorn's own handler would close the socket immediately and
re-raise the signal at exit (a non-zero status), so we replace it.
"""
from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType
from typing import Any

import uvicorn

from awqserve.config.engine_config import EngineConfig
from awqserve.entrypoints.openai.app import create_app
from awqserve.entrypoints.openai.connection_limits import ConnectionLimits, QuietDisconnects, protocol_with
from awqserve.entrypoints.openai.server_config import ServerConfig
from awqserve.entrypoints.openai.state import AppState, EngineFactory

logger = logging.getLogger("awqserve.server")


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose exit signals drain in-flight requests first. `exit_code` is the process status."""

    def __init__(self, config: uvicorn.Config, state: AppState) -> None:
        super().__init__(config)
        self.state = state
        self.exit_code = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        self.state.on_fatal = self.fatal
        await super().serve(sockets)

    def fatal(self, code: int) -> None:
        """Exit soon with `code` (model failed to load)."""
        self.exit_code = code
        self.should_exit = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain is not None or self.should_exit or self._loop is None:
            logger.warning("second signal: exiting now")
            self.should_exit = True
            self.force_exit = True
            return
        self.state.draining = True
        self._loop.call_soon_threadsafe(self._start_drain, signal.Signals(sig).name)

    def _start_drain(self, name: str) -> None:
        self._drain = asyncio.ensure_future(self._drain_then_exit(name))

    async def _drain_then_exit(self, name: str) -> None:
        tracker, timeout = self.state.tracker, self.state.config.shutdown_timeout
        logger.info("%s: draining %d in-flight request(s), up to %gs", name, tracker.api_requests, timeout)
        try:
            await asyncio.wait_for(tracker.idle.wait(), timeout)
        except asyncio.TimeoutError:
            logger.warning("shutdown timeout: aborting %d request(s)", tracker.api_requests)
            for abort in list(tracker.aborters.values()):
                abort("The server is shutting down; this request was aborted.")
            try:
                await asyncio.wait_for(tracker.idle.wait(), 5.0)
            except asyncio.TimeoutError:
                logger.error("requests did not stop after abort; exiting anyway")
        await asyncio.sleep(0.05)  # let the last responses flush their final bytes
        self.should_exit = True


def serve(config: ServerConfig, engine_config: EngineConfig, engine_factory: EngineFactory | None = None) -> int:
    """Serve until a signal (or a model-load failure); returns the process exit status.

    Connection limits are explicit (connection_limits.py): header, body and write-stall timeouts,
    keep-alive, the largest request head; a dropped connection is one warning line."""
    app = create_app(config, engine_config, engine_factory)
    limits = ConnectionLimits.from_env()
    uv_config = uvicorn.Config(QuietDisconnects(app), host=config.host, port=config.port, log_level=config.log_level,
                               access_log=False, lifespan="on", timeout_graceful_shutdown=5,
                               http=protocol_with(limits), timeout_keep_alive=int(max(1, limits.keep_alive)),
                               h11_max_incomplete_event_size=limits.max_incomplete_event_bytes,
                               ssl_keyfile=config.ssl_keyfile, ssl_certfile=config.ssl_certfile)
    server = DrainingServer(uv_config, app.state.awqserve)
    server.run()
    return server.exit_code
