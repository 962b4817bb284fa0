"""Frozen configuration of a Ray Serve deployment of awqserve, and the `awqserve serve --ray` flags.

No Ray import here: the flags are parsed (and `--help` shown) without the optional extra installed.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from awqserve.config.engine_config import EngineConfig
from awqserve.entrypoints.openai.server_config import ServerConfig

APP_NAME = "awqserve"
ENGINE_DEPLOYMENT = "AwqEngine"
INGRESS_DEPLOYMENT = "AwqIngress"


@dataclass(frozen=True)
class RayConfig:
    """How many engine replicas, what each one asks of the cluster, and how requests reach them.

    `replicas` None means autoscaling between `min_replicas` and `max_replicas`, aiming at
    `target_ongoing` requests per replica. `max_queued_requests` bounds the requests waiting in the
    ingress for a free replica; past it the client gets 503 + Retry-After. `metrics_port` > 0: each
    replica also serves its Prometheus metrics on `metrics_host:metrics_port + rank` (0: off).
    """

    replicas: int | None = 1
    min_replicas: int = 1
    max_replicas: int = 4
    address: str | None = None
    node_ip: str = "127.0.0.1"
    num_cpus_per_replica: float = 1.0
    num_gpus_per_replica: float = 0.0
    max_queued_requests: int = 64
    ingress_replicas: int = 1
    prefix_chunk_chars: int = 64
    prefix_imbalance: int = 4
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    health_check_period_s: float = 5.0
    app_name: str = APP_NAME

    def __post_init__(self) -> None:
        checks = [
            (self.replicas is None or self.replicas >= 1, "replicas must be >= 1 or auto"),
            (1 <= self.min_replicas <= self.max_replicas, "need 1 <= min_replicas <= max_replicas"),
            (self.num_cpus_per_replica >= 0 and self.num_gpus_per_replica >= 0, "resources must be >= 0"),
            (self.max_queued_requests >= 1, "max_queued_requests must be >= 1"),
            (self.ingress_replicas >= 1, "ingress_replicas must be >= 1"),
            (self.prefix_chunk_chars >= 1 and self.prefix_imbalance >= 1, "prefix settings must be >= 1"),
            (0 <= self.metrics_port < 65536, "metrics_port must be in 0..65535"),
        ]
        for ok, why in checks:
            if not ok:
                raise ValueError(why)


def replica_capacity(server: ServerConfig, engine: EngineConfig) -> int:
    """Requests one replica holds at once (Ray's `max_ongoing_requests`): its engine's running batch
    plus its waiting queue, so Ray never sends a replica more than its own admission would take."""
    return engine.max_num_seqs + server.max_num_queued_reqs


def scaling_options(cfg: RayConfig, engine: EngineConfig) -> dict[str, Any]:
    """`num_replicas` or `autoscaling_config` for the engine deployment (Ray Serve option names)."""
    if cfg.replicas is not None:
        return {"num_replicas": cfg.replicas}
    return {"autoscaling_config": {"min_replicas": cfg.min_replicas, "max_replicas": cfg.max_replicas,
                                   "initial_replicas": cfg.min_replicas,
                                   # a replica is "busy enough" when its running batch is full
                                   "target_ongoing_requests": engine.max_num_seqs}}


def _replicas(text: str) -> int | None:
    if text == "auto":
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1 or auto")
    return value


def add_ray_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Ray Serve (several replicas behind one endpoint; needs awqserve[ray])")
    g.add_argument("--ray", action="store_true", help="serve through Ray Serve (docs/SCALING.md)")
    g.add_argument("--replicas", type=_replicas, default=1, help="engine replicas, or auto (autoscaling)")
    g.add_argument("--min-replicas", type=int, default=1, help="with --replicas auto")
    g.add_argument("--max-replicas", type=int, default=4, help="with --replicas auto")
    g.add_argument("--ray-address", default=None,
                   help="join this Ray cluster (host:port of `ray start --head`); default: start a local one")
    g.add_argument("--ray-node-ip", default="127.0.0.1", help="IP a local Ray cluster binds to")
    g.add_argument("--num-cpus-per-replica", type=float, default=None,
                   help="CPUs each replica reserves (default: --num-threads, else 1)")
    g.add_argument("--num-gpus-per-replica", type=float, default=None,
                   help="GPUs each replica reserves (default: 1 with --device cuda, else 0)")
    g.add_argument("--ray-max-queued-requests", type=int, default=64,
                   help="requests waiting for a free replica; beyond → 503 + Retry-After")
    g.add_argument("--ingress-replicas", type=int, default=1, help="replicas of the (light) HTTP ingress")
    g.add_argument("--prefix-chunk-chars", type=int, default=64, help="prefix-routing granularity")
    g.add_argument("--prefix-imbalance", type=int, default=4,
                   help="queue-length gap at which a prefix's replica is passed over for the least loaded")
    g.add_argument("--replica-metrics-port", type=int, default=0,
                   help="each replica serves /metrics on this port + its rank (0: only through the proxy)")
    g.add_argument("--replica-metrics-host", default="127.0.0.1")


def ray_config_from_args(args: argparse.Namespace, engine: EngineConfig) -> RayConfig:
    """Flags → RayConfig (ValueError with a user-facing message on bad values)."""
    cpus = args.num_cpus_per_replica
    if cpus is None:
        cpus = float(engine.num_threads or 1)
    gpus = args.num_gpus_per_replica
    if gpus is None:
        gpus = 1.0 if engine.device == "cuda" else 0.0
    return RayConfig(replicas=args.replicas, min_replicas=args.min_replicas, max_replicas=args.max_replicas,
                     address=args.ray_address, node_ip=args.ray_node_ip, num_cpus_per_replica=cpus,
                     num_gpus_per_replica=gpus, max_queued_requests=args.ray_max_queued_requests,
                     ingress_replicas=args.ingress_replicas, prefix_chunk_chars=args.prefix_chunk_chars,
                     prefix_imbalance=args.prefix_imbalance, metrics_host=args.replica_metrics_host,
                     metrics_port=args.replica_metrics_port)
