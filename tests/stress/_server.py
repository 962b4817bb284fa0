"""A real `awqserve serve` child process for the stress scenarios: start, probe, signal, read its log.

Separate from tests/e2e/conftest.py (a conftest cannot be imported by name from another folder) but the
same contract: the demo model, eager (a compiled start costs minutes on 2 cores), a free loopback
port, stdout+stderr into a temporary log file. `STRESS_FLAGS` are the small limits every stress server
shares, so "capacity" is the same number in every scenario: running (`--max-num-seqs`) + queue
(`--max-num-queued-reqs`).
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
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
MAX_NUM_SEQS = 8
MAX_QUEUED = 32
CAPACITY = MAX_NUM_SEQS + MAX_QUEUED
STRESS_FLAGS = ["--max-model-len", "512", "--kv-cache-memory", "256MiB", "--max-num-seqs", str(MAX_NUM_SEQS),
                "--max-num-queued-reqs", str(MAX_QUEUED), "--disable-log-requests", "--log-level", "warning",
                "--enforce-eager", "--num-threads", "2"]
# Engine bookkeeping on /health (leak checks); short connection timeouts so slow clients are dropped
# within seconds (production defaults: 10 s head, 30 s body, 60 s write stall).
# Test-only fault injection is on too: only prompts holding a `__fault_*__` marker are affected.
SERVER_ENV = {"AWQSERVE_DEBUG_ENGINE": "1", "AWQSERVE_FAULT_INJECT": "1", "AWQSERVE_HEADER_TIMEOUT_S": "3", "AWQSERVE_BODY_TIMEOUT_S": "3",
              "AWQSERVE_WRITE_STALL_TIMEOUT_S": "5"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StressServer:
    """`python -m awqserve serve MODEL` on 127.0.0.1. `base_url`, `proc` (the Popen), `log_text()`.

    `env` adds to the child's environment (e.g. AWQSERVE_FAULT_INJECT=1) over `SERVER_ENV`, so /health
    carries the engine's exact bookkeeping (`engine_debug`) and slow clients are dropped quickly."""

    def __init__(self, model: Path, flags: list[str] | None = None, env: dict[str, str] | None = None,
                 port: int | None = None) -> None:
        self.model = model
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.url = self.base_url  # the e2e fixtures' name for it
        self.log_path = Path(tempfile.NamedTemporaryFile(prefix="awqserve-stress-", suffix=".log",
                                                         delete=False).name)
        argv = [sys.executable, "-m", "awqserve", "serve", str(model), "--port", str(self.port),
                *STRESS_FLAGS, *(flags or [])]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **SERVER_ENV, **(env or {})}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 300.0) -> "StressServer":
        """Poll /health until 200; raise with the log tail if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                if httpx.get(self.base_url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log_text()}")

    def log_text(self, tail: int | None = None) -> str:
        text = self.log_path.read_text(errors="replace")
        return text if tail is None else text[-tail:]

    def health(self) -> dict[str, Any]:
        r = httpx.get(self.base_url + "/health", timeout=10)
        body: dict[str, Any] = r.json()
        body["_status"] = r.status_code
        return body

    def metrics_text(self) -> str:
        return httpx.get(self.base_url + "/metrics", timeout=10).text

    def rss_bytes(self) -> int:
        """Resident set size of the server process (VmRSS), in bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

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

