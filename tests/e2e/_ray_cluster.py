"""A throwaway local Ray cluster on 127.0.0.1 with `awqserve serve --ray` deployed on it, for the e2e tests.

This process starts the head node (loopback only, no dashboard, small object store) and stays its
driver, so tests can kill a replica's actor and watch Ray Serve replace it; `awqserve serve --ray
--ray-address ...` runs as a subprocess (the real CLI, as users run it). `close()` undoes everything,
also after a failed start.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from conftest import ServerProcess

RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keeps a loopback node IP: every Ray server on 127.0.0.1
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",  # loopback-only throwaway cluster: no token to hand to the CLI and driver
    "RAY_DEDUP_LOGS": "0",
    "RAY_SERVE_HTTP_KEEP_ALIVE_TIMEOUT_S": "30",
}
APP, ENGINE = "awqserve", "AwqEngine"


class RayCluster:
    def __init__(self) -> None:
        self.address = ""
        self.metrics_port = 0
        self.server: ServerProcess | None = None
        self.driver = False

    def start_head(self) -> None:
        """The head node, started by (and owned by) this process: `ray.shutdown()` ends it, and no
        `ray stop` is needed, which would also stop any other Ray cluster on the machine."""
        import ray

        ray.init(address="local", _node_ip_address="127.0.0.1", num_cpus=4, include_dashboard=False,
                 object_store_memory=200 << 20, log_to_driver=False)
        self.driver = True
        self.address = ray.get_runtime_context().gcs_address

    def start_awqserve(self, model: Path, flags: list[str], timeout: float = 300.0) -> ServerProcess:
        server = self.server = ServerProcess(model, ["--ray", "--ray-address", self.address, *flags], env=RAY_ENV)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # Ray's proxy answers plain-text 404s until the app is up
            if server.proc.poll() is not None:
                raise RuntimeError(f"awqserve serve --ray exited with {server.proc.returncode}:\n{server.log_text()}")
            try:
                if httpx.get(server.url + "/health", timeout=5).status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"not ready after {timeout}s:\n{server.log_text()}")

    def replica_actor(self, unique_id: str) -> Any:
        import ray

        return ray.get_actor(f"SERVE_REPLICA::{APP}#{ENGINE}#{unique_id}", namespace="serve")

    def running_replicas(self) -> int:
        from ray import serve

        status = serve.status().applications[APP].deployments[ENGINE]
        return int(status.replica_states.get("RUNNING", 0))

    def wait_replicas(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.running_replicas() >= n:
                return
            time.sleep(0.5)
        raise TimeoutError(f"Ray Serve did not get back to {n} running replicas in {timeout}s")

    def close(self) -> None:
        if self.server is not None:
            self.server.stop(timeout=60)
        if self.driver:
            import ray

            ray.shutdown()
