"""The Ray Serve application: engine replicas behind the ingress, from awqserve's configs or flags.

`build_application(server, engine, cfg)` is what `awqserve serve --ray` deploys; `app(args)` is the
same thing as an application builder for `serve run awqserve.ray:app key=value ...` and Ray Serve
config files (`import_path: awqserve.ray:app`, `args: {...}`), taking `awqserve serve`'s flag names.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Mapping, cast

from ray import serve
from ray.serve import Application
from ray.serve.config import RequestRouterConfig

from awqserve.config.engine_config import EngineConfig
from awqserve.entrypoints.openai.server_config import ServerConfig
from awqserve.ray.config import (ENGINE_DEPLOYMENT, INGRESS_DEPLOYMENT, RayConfig, add_ray_arguments,
                                 ray_config_from_args, replica_capacity, scaling_options)
from awqserve.ray.deployment import AwqEngine, AwqIngress

ROUTER_CLASS = "awqserve.ray.router:PrefixAwareRouter"


def engine_config_for_replica(engine: EngineConfig, cfg: RayConfig) -> EngineConfig:
    """Pin the model path (replicas must not each build the demo model) and, on CPU, give each replica
    as many torch threads as CPUs it reserved, so replicas on one node do not oversubscribe it."""
    if engine.model is None:
        from awqserve.tools.demo_model import DEMO_SERVED_NAME, ensure_demo_model

        # the name clients see stays the demo model's, not the cache path
        engine = dataclasses.replace(engine, model=str(ensure_demo_model()),
                                     served_model_name=engine.served_model_name or DEMO_SERVED_NAME)
    if engine.num_threads is None and engine.device != "cuda" and cfg.num_cpus_per_replica >= 1:
        engine = dataclasses.replace(engine, num_threads=int(cfg.num_cpus_per_replica))
    return engine


def build_application(server: ServerConfig, engine: EngineConfig, cfg: RayConfig) -> Application:
    """The bound application: `cfg.replicas` (or autoscaled) `AwqEngine` replicas, each admitting at
    most its engine's running + queue limits, routed by prefix, behind one `AwqIngress`."""
    engine = engine_config_for_replica(engine, cfg)
    resources: dict[str, Any] = {"num_cpus": cfg.num_cpus_per_replica}
    if cfg.num_gpus_per_replica > 0:
        resources["num_gpus"] = cfg.num_gpus_per_replica
    engine_dep = _deployment(AwqEngine).options(
        name=ENGINE_DEPLOYMENT, ray_actor_options=resources,
        max_ongoing_requests=replica_capacity(server, engine), max_queued_requests=cfg.max_queued_requests,
        health_check_period_s=cfg.health_check_period_s, health_check_timeout_s=30.0,
        graceful_shutdown_timeout_s=server.shutdown_timeout,
        request_router_config=RequestRouterConfig(
            request_router_class=ROUTER_CLASS,  # type: ignore[arg-type]  # str or class
            request_router_kwargs={"chunk_chars": cfg.prefix_chunk_chars, "imbalance": cfg.prefix_imbalance}),
        **scaling_options(cfg, engine))
    ingress = _deployment(AwqIngress).options(
        name=INGRESS_DEPLOYMENT, num_replicas=cfg.ingress_replicas, ray_actor_options={"num_cpus": 0},
        # the ingress only relays: it holds every request in flight, so it must never be the limit
        max_ongoing_requests=100_000)
    application: Application = ingress.bind(engine_dep.bind(server, engine, cfg), server)
    return application


def _deployment(cls: type) -> Any:
    """`serve.deployment(cls)` (its stubs only describe the decorator-with-arguments form)."""
    return cast(Any, serve.deployment)(cls)


def args_to_argv(args: Mapping[str, Any]) -> list[str]:
    """`{"model": "/m", "replicas": 2, "enforce-eager": True}` → `["/m", "--replicas", "2", "--enforce-eager"]`.
    Keys are `awqserve serve` flag names (dashes or underscores); true/false values are switches."""
    argv: list[str] = []
    for key, value in args.items():
        if key == "model":
            argv.insert(0, str(value))
            continue
        flag = "--" + key.replace("_", "-")
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if text in ("true", "false"):
            argv += [flag] if text == "true" else []
        elif isinstance(value, (list, tuple)):
            argv += [flag, *(str(v) for v in value)]
        else:
            argv += [flag, text]
    return argv


def app(args: Mapping[str, Any] | None = None) -> Application:
    """Application builder for `serve run awqserve.ray:app replicas=2 enforce-eager=true` (any
    `awqserve serve` flag). The Ray cluster is the one `serve run` connects to."""
    from awqserve.cli.serve import add_arguments, build_configs

    parser = argparse.ArgumentParser(prog="awqserve.ray:app")
    add_arguments(parser)
    if not any(a.dest == "ray" for a in parser._actions):  # serve.py may already include the Ray flags
        add_ray_arguments(parser)
    ns = parser.parse_args(args_to_argv(args or {}))
    server, engine = build_configs(ns)
    return build_application(server, engine, ray_config_from_args(ns, engine))
