"""Run the real app (uvicorn, real sockets) on the fake engine in a background thread, for unit tests."""
from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import replace
from typing import Any, Iterator

import httpx
import uvicorn

from awqserve.config.engine_config import EngineConfig
from awqserve.entrypoints.openai.app import create_app
from awqserve.entrypoints.openai.server import DrainingServer
from awqserve.entrypoints.openai.server_config import ServerConfig
from fake_engine import FakeAsyncEngine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RunningServer:
    def __init__(self, server: DrainingServer, url: str, engines: list[FakeAsyncEngine]) -> None:
        self.server, self.url, self.engines = server, url, engines

    @property
    def state(self) -> Any:
        return self.server.state

    @property
    def engine(self) -> FakeAsyncEngine:
        return self.engines[0]

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kw)


@contextlib.contextmanager
def run_server(config: ServerConfig | None = None, engine_config: EngineConfig | None = None,
               wait_ready: bool = True, **engine_kw: Any) -> Iterator[RunningServer]:
    """Start on a free port, wait until listening (and ready unless told not to), stop on exit."""
    port = free_port()
    config = replace(config or ServerConfig(), port=port)
    engine_config = engine_config or EngineConfig(max_model_len=256, max_num_seqs=8)
    engines: list[FakeAsyncEngine] = []

    def factory(cfg: EngineConfig) -> FakeAsyncEngine:
        engines.append(FakeAsyncEngine(cfg, **engine_kw))
        return engines[-1]

    app = create_app(config, engine_config, factory)
    uv = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                        timeout_graceful_shutdown=2)
    server = DrainingServer(uv, app.state.awqserve)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    _wait(url, "/health/live" if not wait_ready else "/health")
    try:
        yield RunningServer(server, url, engines)
    finally:
        server.should_exit = True
        thread.join(10)


def _wait(url: str, path: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + path, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"server at {url} did not answer {path} within {timeout}s")
