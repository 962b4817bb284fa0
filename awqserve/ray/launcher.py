"""`awqserve serve --ray`: join (or start) a Ray cluster, deploy the application, serve until a signal.

A local cluster (no `--ray-address`) binds to `--ray-node-ip` (127.0.0.1 by default) and has no
dashboard; it lives as long as this process. With `--ray-address` the application is deployed on
that cluster and deleted again on exit; the cluster itself keeps running.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any

from awqserve.config.engine_config import EngineConfig
from awqserve.entrypoints.openai.server_config import ServerConfig
from awqserve.ray.config import RayConfig, ray_config_from_args

logger = logging.getLogger("awqserve.ray")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
MISSING = "awqserve serve --ray needs Ray Serve: pip install 'awqserve[ray]'"


def _refusals(server: ServerConfig) -> str | None:
    if server.ssl_keyfile or server.ssl_certfile:
        return "--ssl-* is not supported with --ray (terminate TLS in front of Ray Serve's proxy)"
    return None


def _init_ray(ray: Any, cfg: RayConfig) -> bool:
    """Connect to `cfg.address` or start a local cluster; True when we started it (and own it)."""
    if cfg.address:
        ray.init(address=cfg.address, log_to_driver=False)
        return False
    # a small object store: only ASGI messages travel through it
    store = int(os.environ.get("AWQSERVE_RAY_OBJECT_STORE_BYTES", 256 << 20))
    # address="local": always a new cluster, never one left running by someone else
    ray.init(address="local", _node_ip_address=cfg.node_ip, include_dashboard=False,
             object_store_memory=store, log_to_driver=False)
    return True


def run_ray(args: argparse.Namespace, server: ServerConfig, engine: EngineConfig) -> int:
    """Deploy and serve; returns the process exit status."""
    why = _refusals(server)
    if why is not None:
        print(f"awqserve serve: error: {why}", file=sys.stderr)
        return 2
    try:
        cfg = ray_config_from_args(args, engine)
        if not cfg.address and cfg.node_ip in _LOOPBACK:
            # Ray otherwise swaps a loopback node IP for the machine's address and binds its servers to
            # all interfaces; this (despite its name) keeps a local cluster on loopback only
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        import ray
        from ray import serve
    except ValueError as e:
        print(f"awqserve serve: error: {e}", file=sys.stderr)
        return 2
    except ImportError:
        print(f"awqserve serve: error: {MISSING}", file=sys.stderr)
        return 2
    from awqserve.ray.application import build_application

    stop = threading.Event()
    owned = _init_ray(ray, cfg)
    try:
        serve.start(http_options={"host": server.host, "port": server.port})
        serve.run(build_application(server, engine, cfg), name=cfg.app_name, route_prefix="/", blocking=False)
        n = "auto" if cfg.replicas is None else str(cfg.replicas)
        logger.info("serving %s replica(s) at http://%s:%d (Ray Serve)", n, server.host, server.port)
        print(f"awqserve: {n} replica(s) ready at http://{server.host}:{server.port}", flush=True)
        for sig in (signal.SIGINT, signal.SIGTERM):  # only now: Ray and Serve install handlers of their own
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        logger.info("stopping: draining replicas (up to %gs)", server.shutdown_timeout)
        return 0
    except Exception as e:  # noqa: BLE001 - deployment failures end the command with their reason
        print(f"awqserve serve: error: Ray Serve deployment failed: {e}", file=sys.stderr)
        return 1
    finally:
        _teardown(ray, serve, cfg, owned, server.shutdown_timeout)


def _teardown(ray: Any, serve: Any, cfg: RayConfig, owned: bool, grace_s: float) -> None:
    """Stop the application (draining replicas up to `grace_s`), then leave the cluster. Bounded: if
    the cluster is already gone (its processes killed), Serve's shutdown would wait forever."""
    def stop_serve() -> None:
        try:
            if owned:
                serve.shutdown()
            else:
                serve.delete(cfg.app_name)
        except Exception:  # noqa: BLE001 - exiting anyway
            logger.exception("Ray Serve shutdown failed")

    worker = threading.Thread(target=stop_serve, name="awqserve-serve-shutdown", daemon=True)
    worker.start()
    worker.join(grace_s + 30.0)
    if worker.is_alive():
        logger.error("Ray Serve did not shut down within %.0fs; leaving the cluster anyway", grace_s + 30.0)
    ray.shutdown()  # a local cluster (ours) ends with it
