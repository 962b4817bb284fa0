"""`awqserve quantize SRC DST`: AWQ-quantize a float HF checkpoint to compressed-tensors int4."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", type=Path, help="float checkpoint directory (Llama / Qwen2 / Qwen3, HF layout)")
    parser.add_argument("dst", type=Path, help="output directory (created; must not hold a model already)")
    parser.add_argument("--group-size", type=int, default=128, help="inputs per scale (default 128)")
    parser.add_argument("--asym", action="store_true", help="asymmetric (zero points); default symmetric")
    parser.add_argument("--calibration", type=Path, default=None,
                        help="calibration text file (default: awqserve's own; documents split by '===')")
    parser.add_argument("--num-samples", type=int, default=32, help="calibration windows (default 32)")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per window (default 128)")
    parser.add_argument("--search-tokens", type=int, default=256,
                        help="tokens on which the scale search loss is measured (default 256)")


def run(args: argparse.Namespace) -> int:
    from awqserve.errors import AwqServeError
    from awqserve.tools.awq.calibration import read_calibration_text
    from awqserve.tools.awq.quantize import AwqOptions, quantize_checkpoint

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not (args.src / "config.json").is_file():
        raise AwqServeError(f"{args.src} is not a model directory (no config.json)")
    if (args.dst / "model.safetensors").exists():
        raise AwqServeError(f"{args.dst} already holds a model; choose another output directory")
    try:
        opts = AwqOptions(group_size=args.group_size, symmetric=not args.asym, num_samples=args.num_samples,
                          seq_len=args.seq_len, search_tokens=args.search_tokens)
    except ValueError as e:
        raise AwqServeError(str(e)) from None
    text = read_calibration_text(args.calibration)
    quantize_checkpoint(args.src, args.dst, opts, calibration_text=text)
    print(args.dst)
    return 0
