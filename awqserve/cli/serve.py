"""`awqserve serve [MODEL]`: the OpenAI-compatible HTTP server. Flags use `vllm serve`'s names where they
mean the same thing; vLLM flags we do not implement are refused with a message saying why.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from awqserve.config.engine_config import EngineConfig, LmHeadPrecision, WeightLayout, enum_values, parse_bytes

API_KEY_ENV = "AWQSERVE_API_KEY"
_DTYPES = {"auto": "auto", "float32": "float32", "float": "float32", "bfloat16": "bfloat16",
           "float16": "float16", "half": "float16"}
_QUANT = ("awq", "awq_marlin", "compressed-tensors")

# vLLM flags that mean something we do not do: flag -> (value that is harmless, why not)
_REFUSED: dict[str, tuple[str | None, str]] = {
    "--tensor-parallel-size": ("1", "awqserve runs on one device; use vLLM for tensor parallelism"),
    "--pipeline-parallel-size": ("1", "awqserve runs on one device"),
    "--data-parallel-size": ("1", "use --ray --replicas N (replicas on Ray Serve, docs/SCALING.md)"),
    "--enable-lora": (None, "LoRA is not implemented"),
    "--lora-modules": (None, "LoRA is not implemented"),
    "--speculative-config": (None, "speculative decoding is not implemented"),
    "--kv-cache-dtype": ("auto", "the KV cache uses the activation dtype"),
    "--cpu-offload-gb": ("0", "weight offloading is not implemented"),
    "--trust-remote-code": (None, "awqserve never runs model code from a checkpoint; drop the flag"),
    "--enable-chunked-prefill": (None, "prefill is always chunked by --max-num-batched-tokens"),
}
_SHORT = {"--tensor-parallel-size": "-tp", "--pipeline-parallel-size": "-pp", "--data-parallel-size": "-dp"}


class _Refuse(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        harmless, why = _REFUSED[self.dest_flag]
        if harmless is not None and values == harmless:
            return
        parser.error(f"{option_string} is a vLLM flag that awqserve does not implement: {why}.")

    @property
    def dest_flag(self) -> str:
        return next(o for o in self.option_strings if o.startswith("--"))


def _tool_parser(name: str) -> str:
    if name not in ("auto", "hermes"):
        raise argparse.ArgumentTypeError(f"{name!r} is not a tool-call format awqserve parses; use hermes "
                                         "(the format of Qwen3 and Qwen3-Next) or auto")
    return name


def _max_len(text: str) -> int | None:
    """'8192', '8k' (8000), '8K' (8192), 'auto' / '-1' (the model's limit capped at 8192)."""
    t = text.strip()
    if t in ("auto", "-1"):
        return None
    mult = {"k": 1000, "K": 1024, "m": 10**6, "M": 1 << 20}.get(t[-1:], 1)
    value = int(float(t[:-1]) * mult) if mult != 1 else int(t)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default=None,
                   help="model directory (Hugging Face layout); default: the built-in demo model")
    s = p.add_argument_group("server")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--served-model-name", nargs="+", default=None, help="name(s) clients use for the model")
    s.add_argument("--api-key", action="append", default=None,
                   help=f"required bearer key (repeatable; also ${API_KEY_ENV}, comma-separated)")
    s.add_argument("--allowed-origins", action="append", default=None, help="CORS origins (JSON list or comma list)")
    s.add_argument("--allowed-methods", action="append", default=None)
    s.add_argument("--allowed-headers", action="append", default=None)
    s.add_argument("--allow-credentials", action="store_true")
    s.add_argument("--max-num-queued-reqs", type=int, default=256, help="waiting-queue bound; beyond → 503")
    s.add_argument("--rate-limit-rpm", type=int, default=None, help="requests per minute per client")
    s.add_argument("--rate-limit-tpm", type=int, default=None, help="tokens per minute per client")
    s.add_argument("--request-timeout", type=float, default=600.0, help="seconds per request; 0 disables")
    s.add_argument("--memory-warning-threshold", type=float, default=0.9, help="KV usage fraction that warns")
    s.add_argument("--debug-metrics", action="store_true", help="timing headers/fields on every response")
    s.add_argument("--disable-metrics", action="store_true", help="no /metrics endpoint (404)")
    s.add_argument("--protect-metrics", action="store_true", help="/metrics requires the API key")
    s.add_argument("--shutdown-timeout", type=float, default=30.0, help="seconds to drain on SIGTERM")
    s.add_argument("--max-request-body-size", default="16MiB", help="larger bodies get 413")
    s.add_argument("--disable-log-requests", action="store_true")
    s.add_argument("--log-requests", "--enable-log-requests", dest="log_requests", action="store_true",
                   help="log each request's prompt text and sampling parameters (off by default: the logs "
                        "hold no prompt text)")
    s.add_argument("--chat-template", default=None, help="chat template file (or inline Jinja text)")
    s.add_argument("--log-level", "--uvicorn-log-level", dest="log_level", default="info",
                   choices=["critical", "error", "warning", "info", "debug", "trace"])
    a = p.add_argument_group("agents (tools, reasoning, Responses API)")
    a.add_argument("--enable-auto-tool-choice", action="store_true",
                   help="accepted for vLLM compatibility: tool_choice auto is always available")
    a.add_argument("--tool-call-parser", default="auto", type=_tool_parser,
                   help="tool-call format: hermes (Qwen3, Qwen3-Next; 'auto' picks it)")
    a.add_argument("--reasoning-parser", default=None, choices=["qwen3"],
                   help="split <think>...</think> into reasoning_content / reasoning")
    a.add_argument("--responses-store-size", type=int, default=1024,
                   help="responses kept in memory for previous_response_id (0: stateless)")
    s.add_argument("--no-ui", dest="ui", action="store_false",
                   help="do not serve the chat page at / (the API is unaffected)")
    s.add_argument("--ssl-keyfile", default=None)
    s.add_argument("--ssl-certfile", default=None)
    e = p.add_argument_group("engine")
    e.add_argument("--max-model-len", type=_max_len, default=None,
                   help="context length (default 8192, capped by the model's own limit)")
    e.add_argument("--max-num-seqs", type=int, default=64)
    e.add_argument("--max-num-batched-tokens", type=int, default=2048)
    e.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    e.add_argument("--kv-cache-memory", "--kv-cache-memory-bytes", dest="kv_cache_memory", default=None,
                   help="KV-cache budget, e.g. 2GiB (default: CPU 1 GiB, CUDA from --gpu-memory-utilization)")
    e.add_argument("--quantization", "-q", choices=_QUANT, default=None, help="checked against the checkpoint")
    e.add_argument("--dtype", choices=sorted(_DTYPES), default="auto")
    e.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    e.add_argument("--block-size", type=int, default=16)
    e.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=None)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--max-logprobs", type=int, default=20)
    e.add_argument("--weight-layout", choices=enum_values(WeightLayout), default="auto")
    e.add_argument("--num-threads", type=int, default=None, help="torch intra-op threads (CPU)")
    e.add_argument("--lm-head-precision", choices=enum_values(LmHeadPrecision), default="auto",
                   help="logits projection: auto = an int8 copy for few rows (the head of an int4 checkpoint "
                        "where the CPU q8 kernels are built; else on bf16-native CPUs), float = exact")
    e.add_argument("--enforce-eager", action="store_true",
                   help="do not compile the decode step (CPU compiles it by default: slower start, faster decode)")
    e.add_argument("--load-format", choices=["auto", "dummy"], default="auto",
                   help="dummy: build the model from config.json with random weights made on the device "
                        "(measure a model's real shapes without downloading it)")
    e.add_argument("--prepare-only", action="store_true",
                   help="build what a start needs (the demo model, the compiled decode graphs in inductor's "
                        "cache) with these flags, then exit without serving; scripts/setup.sh runs it so the "
                        "first `serve` starts warm")
    from awqserve.ray.config import add_ray_arguments  # flags only: Ray itself is imported by --ray

    add_ray_arguments(p)
    r = p.add_argument_group("vLLM flags refused (not implemented)")
    for flag in _REFUSED:
        names = [flag, _SHORT[flag]] if flag in _SHORT else [flag]
        r.add_argument(*names, action=_Refuse, nargs="?", default=None, help=argparse.SUPPRESS)


def _list_flag(values: Sequence[str] | None) -> tuple[str, ...]:
    out: list[str] = []
    for v in values or []:
        v = v.strip()
        parsed = json.loads(v) if v.startswith("[") else v.split(",")
        out += [str(x).strip() for x in parsed if str(x).strip()]
    return tuple(out)


def _chat_template(value: str | None) -> str | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    return path.read_text() if path.is_file() else value


def _check_quantization(model: str | None, wanted: str | None) -> None:
    if wanted is None or model is None:
        return
    cfg_path = Path(model) / "config.json"
    qc = json.loads(cfg_path.read_text()).get("quantization_config") if cfg_path.is_file() else None
    if not qc:
        raise ValueError(f"--quantization {wanted} was given but {model} is not a quantized checkpoint")


def build_configs(args: argparse.Namespace, environ: dict[str, str] | None = None):  # noqa: ANN201
    """Flags → (ServerConfig, EngineConfig). ValueError with a user-facing message on bad values."""
    from awqserve.entrypoints.openai.server_config import ServerConfig

    env = os.environ if environ is None else environ
    keys = list(args.api_key or []) + [k.strip() for k in env.get(API_KEY_ENV, "").split(",") if k.strip()]
    names = tuple(args.served_model_name or ())
    if args.model is not None and not Path(args.model).expanduser().is_dir():
        raise ValueError(f"model directory {args.model} does not exist (awqserve loads local directories only)")
    _check_quantization(args.model, args.quantization)
    engine = EngineConfig(
        model=args.model, served_model_name=names[0] if names else None, device=args.device,
        dtype=_DTYPES[args.dtype], max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens, block_size=args.block_size,
        kv_cache_memory=parse_bytes(args.kv_cache_memory) if args.kv_cache_memory else None,
        gpu_memory_utilization=args.gpu_memory_utilization, enable_prefix_caching=args.enable_prefix_caching,
        weight_layout=args.weight_layout, seed=args.seed, max_logprobs=args.max_logprobs,
        num_threads=args.num_threads, lm_head_precision=args.lm_head_precision,
        enforce_eager=args.enforce_eager, load_format=args.load_format)
    server = ServerConfig(
        host=args.host, port=args.port, served_model_names=names, api_keys=tuple(keys),
        allowed_origins=_list_flag(args.allowed_origins), allowed_methods=_list_flag(args.allowed_methods) or ("*",),
        allowed_headers=_list_flag(args.allowed_headers) or ("*",), allow_credentials=args.allow_credentials,
        max_num_queued_reqs=args.max_num_queued_reqs, rate_limit_rpm=args.rate_limit_rpm,
        rate_limit_tpm=args.rate_limit_tpm, request_timeout=args.request_timeout or None,
        memory_warning_threshold=args.memory_warning_threshold, debug_metrics=args.debug_metrics,
        disable_metrics=args.disable_metrics, protect_metrics=args.protect_metrics,
        shutdown_timeout=args.shutdown_timeout, max_request_body_bytes=parse_bytes(args.max_request_body_size),
        disable_log_requests=args.disable_log_requests, log_requests=args.log_requests,
        chat_template=_chat_template(args.chat_template),
        log_level=args.log_level, ssl_keyfile=args.ssl_keyfile, ssl_certfile=args.ssl_certfile,
        tool_call_parser=args.tool_call_parser, reasoning_parser=args.reasoning_parser,
        responses_store_size=args.responses_store_size, ui=args.ui)
    return server, engine


def run(args: argparse.Namespace) -> int:
    try:
        server_config, engine_config = build_configs(args)
    except (ValueError, OSError) as e:
        print(f"awqserve serve: error: {e}", file=sys.stderr)
        return 2
    level = "DEBUG" if args.log_level in ("debug", "trace") else args.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.prepare_only:
        return _prepare(engine_config)
    if args.ray:  # several replicas on Ray Serve (optional extra; docs/SCALING.md)
        from awqserve.ray.launcher import run_ray

        return run_ray(args, server_config, engine_config)
    from awqserve.entrypoints.openai.server import serve

    return serve(server_config, engine_config)


def _prepare(engine_config: EngineConfig) -> int:
    """Build the engine once (demo model, load, compile warm-up into the on-disk caches) and exit."""
    import time

    from awqserve.engine.engine_factory import build_engine

    t0 = time.monotonic()
    build_engine(engine_config)
    print(f"awqserve: prepared in {time.monotonic() - t0:.1f}s (the next start reuses the caches)", file=sys.stderr)
    return 0
