"""`--ray` flags → RayConfig, replica capacity, scaling options, and `serve run` arguments → flags."""
from __future__ import annotations

import argparse

import pytest

from awqserve.cli.serve import add_arguments, build_configs
from awqserve.ray.config import RayConfig, ray_config_from_args, replica_capacity, scaling_options


def _parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


def test_flags_map_onto_ray_config() -> None:
    ns = _parse("--ray", "--replicas", "3", "--num-threads", "2", "--ray-max-queued-requests", "7",
                "--prefix-chunk-chars", "32", "--replica-metrics-port", "9400")
    server, engine = build_configs(ns, environ={})
    cfg = ray_config_from_args(ns, engine)
    assert ns.ray and cfg.replicas == 3 and cfg.num_cpus_per_replica == 2.0 and cfg.num_gpus_per_replica == 0
    assert (cfg.max_queued_requests, cfg.prefix_chunk_chars, cfg.metrics_port) == (7, 32, 9400)
    assert cfg.node_ip == "127.0.0.1" and cfg.address is None


def test_cuda_replicas_ask_for_a_gpu() -> None:
    ns = _parse("--ray", "--device", "cuda")
    _, engine = build_configs(ns, environ={})
    assert ray_config_from_args(ns, engine).num_gpus_per_replica == 1.0


def test_capacity_is_running_plus_queue() -> None:
    server, engine = build_configs(_parse("--max-num-seqs", "8", "--max-num-queued-reqs", "16"), environ={})
    assert replica_capacity(server, engine) == 24


def test_auto_replicas_autoscale_on_the_running_batch() -> None:
    ns = _parse("--ray", "--replicas", "auto", "--min-replicas", "2", "--max-replicas", "6", "--max-num-seqs", "32")
    _, engine = build_configs(ns, environ={})
    opts = scaling_options(ray_config_from_args(ns, engine), engine)
    assert opts == {"autoscaling_config": {"min_replicas": 2, "max_replicas": 6, "initial_replicas": 2,
                                           "target_ongoing_requests": 32}}
    assert scaling_options(RayConfig(replicas=2), engine) == {"num_replicas": 2}


def test_bad_values_are_refused() -> None:
    with pytest.raises(SystemExit):
        _parse("--ray", "--replicas", "0")
    for bad in ({"min_replicas": 3, "max_replicas": 2}, {"max_queued_requests": 0}, {"metrics_port": 70000}):
        with pytest.raises(ValueError):
            RayConfig(**bad)  # type: ignore[arg-type]


def test_serve_run_arguments_become_flags() -> None:
    pytest.importorskip("ray.serve")
    from awqserve.ray.application import args_to_argv

    argv = args_to_argv({"replicas": 2, "enforce-eager": "true", "no_ui": False, "model": "/m",
                         "served_model_name": ["a", "b"], "max_num_seqs": "8"})
    assert argv == ["/m", "--replicas", "2", "--enforce-eager", "--served-model-name", "a", "b",
                    "--max-num-seqs", "8"]


def test_application_builder_for_serve_run(tmp_path: object) -> None:
    pytest.importorskip("ray.serve")
    from ray.serve import Application

    from awqserve.ray import app

    application = app({"model": str(tmp_path), "replicas": 2, "num-threads": 1})
    assert isinstance(application, Application)


def test_single_process_server_never_imports_ray() -> None:
    import subprocess
    import sys

    code = ("import argparse, sys\n"
            "from awqserve.cli import serve\n"
            "p = argparse.ArgumentParser(); serve.add_arguments(p)\n"
            "serve.build_configs(p.parse_args([]), environ={})\n"
            "import awqserve.entrypoints.openai.app, awqserve.entrypoints.openai.server\n"
            "sys.exit(any(m == 'ray' or m.startswith('ray.') for m in sys.modules))\n")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
