"""End-to-end fixtures: the real `awqserve serve` as a subprocess, the official openai SDK, OpenAI's schemas.

Model: $AWQSERVE_E2E_MODEL (a model directory) when set, else the built-in demo model (built once
here, before any server starts, so build time never counts against server start-up). One shared
server per session (`server`); modules needing special flags start their own short-lived one.
Response bodies are validated against OpenAI's published OpenAPI document ($AWQSERVE_OPENAPI, default
../shared/openai-openapi/openapi.yaml next to the repository); those checks skip when it is absent.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = Path(os.environ.get("AWQSERVE_OPENAPI", ROOT.parent / "shared" / "openai-openapi" / "openapi.yaml"))
# small context and KV budget: every test fits, several servers can coexist on a 2-core CI box
BASE_FLAGS = ["--max-model-len", "512", "--kv-cache-memory", "256MiB", "--max-num-seqs", "16",
              "--disable-log-requests", "--log-level", "warning"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def model_dir() -> Path:
    explicit = os.environ.get("AWQSERVE_E2E_MODEL")
    if explicit:
        return Path(explicit)
    from awqserve.tools.demo_model import ensure_demo_model

    return ensure_demo_model()


COMPILED = "<compiled>"
"""Pseudo-flag for `start_server`: run the server as users do, with its decode step compiled."""


class ServerProcess:
    """`python -m awqserve serve` on a free port; remembers the /health answers seen while starting."""

    def __init__(self, model: Path | None, flags: list[str], env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="awqserve-e2e-", suffix=".log", delete=False)
        # Eager by default (a compiled start costs minutes on 2 cores); tests of the compiled server
        # pass COMPILED in `flags`.
        extra = [f for f in flags if f != COMPILED] if COMPILED in flags else [*flags, "--enforce-eager"]
        argv = [sys.executable, "-m", "awqserve", "serve", *([str(model)] if model else []),
                "--port", str(self.port), *extra]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=full_env, stdout=self.log, stderr=subprocess.STDOUT)
        self.startup_health: list[tuple[int, Any]] = []

    def wait_ready(self, timeout: float = 300.0) -> "ServerProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                r = httpx.get(self.url + "/health", timeout=2)
                self.startup_health.append((r.status_code, r.json()))
                if r.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log_text()}")

    def log_text(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-5000:]

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)


def start_server(model: Path | None, flags: list[str], env: dict[str, str] | None = None) -> ServerProcess:
    return ServerProcess(model, [*BASE_FLAGS, *flags], env).wait_ready()


@pytest.fixture(scope="session")
def server(model_dir: Path) -> Iterator[ServerProcess]:
    proc = start_server(model_dir, [])
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="session")
def model_name(http: httpx.Client) -> str:
    return str(http.get("/v1/models").json()["data"][0]["id"])


@pytest.fixture(scope="session")
def client(server: ServerProcess) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)


# ---- OpenAI schema validation ----

def _nullable_to_anyof(node: Any) -> Any:
    """OpenAPI's `nullable: true` is not JSON Schema: rewrite it as anyOf [schema, null]."""
    if isinstance(node, list):
        return [_nullable_to_anyof(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable_to_anyof(v) for k, v in node.items() if k != "nullable"}
    return {"anyOf": [out, {"type": "null"}]} if node.get("nullable") is True else out


class Schemas:
    def __init__(self, components: dict[str, Any]) -> None:
        self.components = components

    def validate(self, name: str, body: Any) -> None:
        import jsonschema

        schema = {"$ref": f"#/components/schemas/{name}", "components": {"schemas": self.components}}
        jsonschema.Draft202012Validator(schema).validate(body)


@pytest.fixture(scope="session")
def schemas() -> Schemas:
    if not OPENAPI.is_file():
        pytest.skip(f"OpenAI OpenAPI document not found at {OPENAPI}")
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    doc = yaml.load(OPENAPI.read_text(), Loader=loader)
    return Schemas(_nullable_to_anyof(doc["components"]["schemas"]))


def sse_lines(r: httpx.Response) -> list[str]:
    """The `data:` payloads of an SSE response, in order ('[DONE]' included)."""
    return [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]
