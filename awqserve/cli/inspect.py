"""`awqserve inspect MODEL_DIR [--memory 80GiB ...]`: parameters, bytes and memory plan, no weights read."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model directory (config.json; safetensors headers when present)")
    parser.add_argument("--memory", action="append", default=[], metavar="SIZE",
                        help="device memory budget to plan for, e.g. 80GiB (repeatable)")
    parser.add_argument("--max-model-len", type=int, default=None,
                        help="context limit for the per-sequence cache (default: the model's maximum)")
    parser.add_argument("--kv-dtype", default="bfloat16", help="KV cache dtype: bfloat16 (default), float16, float32")


def run(args: argparse.Namespace) -> int:
    from awqserve.config.engine_config import parse_bytes
    from awqserve.config.model_config import parse_dtype
    from awqserve.tools.inspect import format_report, inspect_model

    report = inspect_model(args.model, budgets=[parse_bytes(m) for m in args.memory],
                           max_model_len=args.max_model_len, kv_dtype=parse_dtype(args.kv_dtype))
    print(format_report(report))
    return 0
