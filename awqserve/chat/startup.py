"""Getting a server to chat with: wait for one to be ready (showing its `/health` loading phase), or
start one in this process on a private loopback port.

The in-process server is the real app (same templates, defaults, parsers and aborts as `serve`) on
127.0.0.1 with a random port and a random API key, so other local users cannot reach the model.
"""
from __future__ import annotations

import contextlib
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TextIO

from awqserve.chat.client import ChatClient, ChatError
from awqserve.config.engine_config import EngineConfig
from awqserve.engine.progress_render import format_duration, label

CONNECT_GRACE_S = 5.0  # a server that was just launched may not listen yet


def health_line(body: Any) -> str:
    """'server loading: compiling decode step 40%, about 12s left' from a loading /health body."""
    if not isinstance(body, dict):
        return "server loading"
    text = f"server loading: {label(str(body.get('phase', 'starting')))}"
    if isinstance(body.get("progress"), (int, float)) and body.get("total"):
        text += f" {body['progress']:.0%}"
    if isinstance(body.get("eta_s"), (int, float)):
        text += f", about {format_duration(body['eta_s'])} left"
    return text


def wait_ready(client: ChatClient, show: TextIO | None, dead: Callable[[], str | None] = lambda: None,
               poll_s: float = 0.25, connect_grace_s: float = CONNECT_GRACE_S) -> None:
    """Block until /health says ok. Shows loading phases on `show` (rewriting one line on a terminal).
    Raises ChatError if the server is dead or unreachable past the grace period."""
    tty = show is not None and bool(getattr(show, "isatty", lambda: False)())
    first, last = time.monotonic(), ""
    while True:
        reason = dead()
        if reason:
            raise ChatError(f"the server failed to start: {reason}")
        try:
            status, body = client.get_json("/health", timeout=5)
        except OSError as e:
            if time.monotonic() - first > connect_grace_s:
                raise ChatError(f"cannot reach {client.base_url}: {e}") from None
            status, body = 0, None
        if status == 200:
            if tty and last:
                show.write("\r\x1b[K")  # type: ignore[union-attr]  # tty implies show
            return
        if isinstance(body, dict) and body.get("status") == "dead":
            raise ChatError(f"the server's engine has stopped: {body.get('error', 'unknown error')}")
        line = health_line(body)
        if show is not None and line != last:
            show.write(f"\r\x1b[K{line}" if tty else line + "\n")
            show.flush()
        last = line
        time.sleep(poll_s)


@dataclass
class LocalServer:
    url: str
    api_key: str
    dead: Callable[[], str | None]


@contextlib.contextmanager
def local_server(engine_config: EngineConfig, reasoning_parser: str | None = None) -> Iterator[LocalServer]:
    """The app with a real engine on 127.0.0.1:<free port>, served from a background thread."""
    import uvicorn

    from awqserve.entrypoints.openai.app import create_app
    from awqserve.entrypoints.openai.server import DrainingServer
    from awqserve.entrypoints.openai.server_config import ServerConfig

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port, key = int(sock.getsockname()[1]), secrets.token_urlsafe(24)
    config = ServerConfig(port=port, api_keys=(key,), disable_metrics=True, disable_log_requests=True,
                          log_level="warning", reasoning_parser=reasoning_parser, shutdown_timeout=1.0,
                          ui=False)  # a private loopback server: no page to serve
    app = create_app(config, engine_config)
    state = app.state.awqserve
    server = DrainingServer(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"), state)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="awqserve-chat-server",
                              daemon=True)
    thread.start()

    def dead() -> str | None:
        if state.boot_error is not None or (state.engine is not None and state.engine.dead):
            return str(state.dead_reason())
        return None if thread.is_alive() else "the server thread stopped"

    try:
        yield LocalServer(f"http://127.0.0.1:{port}", key, dead)
    finally:
        server.should_exit = True
        thread.join(5)
        sock.close()
