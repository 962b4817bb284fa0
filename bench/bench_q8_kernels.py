"""The CPU q8 kernels against PyTorch's kernels on the demo model's shapes, weights out of cache.

    python bench/bench_q8_kernels.py [--threads 2] [--out docs/benchmarks/cpu-q8-kernels.md]

Each cell times a pass over 30 copies of the layer (as a decode step walks 30 layers, so the weights
come from memory, not cache) and reports µs per call and the weight bytes streamed per second. The
median over rounds; other processes on a 2-core machine make single numbers noisy.
"""
from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from awqserve.kernels.cpu.q8_kernels import Q8Int4Kernel, Q8Int8RowKernel, available  # noqa: E402
from awqserve.layers.linear import DenseKernel  # noqa: E402
from awqserve.quant.kernels import Int4CpuKernel, Int8RowKernel  # noqa: E402
from awqserve.quant.packing import quantize_rtn  # noqa: E402

SHAPES = [("qkv", 960, 576), ("o", 576, 576), ("gate_up", 3072, 576), ("down", 576, 1536)]
MS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
COPIES = 30


def timed(kernels: list[Callable[[torch.Tensor], torch.Tensor]], x: torch.Tensor, rounds: int) -> float:
    for k in kernels:
        k(x)
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for k in kernels:
            k(x)
        samples.append((time.perf_counter() - t0) / len(kernels))
    return statistics.median(samples) * 1e6


def int4_rows(rounds: int) -> list[str]:
    out = ["| layer (N×K) | M | q8 int4 µs (GB/s) | PyTorch int4 µs | dense fp32 µs |", "|---|---|---|---|---|"]
    for name, n, k in SHAPES:
        qts = [quantize_rtn(torch.randn(n, k) * 0.02, 64, symmetric=False) for _ in range(COPIES)]
        q8 = [Q8Int4Kernel(q) for q in qts]
        i4 = [Int4CpuKernel(q) for q in qts]
        fp = [DenseKernel(q.dequantize()) for q in qts]
        nbytes = n * k / 2 + 2 * 4 * n * k / 64  # nibbles + float32 scale and bias per group
        for m in MS:
            x = torch.randn(m, k)
            a, b, c = timed(q8, x, rounds), timed(i4, x, rounds), timed(fp, x, rounds)  # type: ignore[arg-type]
            out.append(f"| {name} ({n}×{k}) | {m} | {a:.0f} ({nbytes / a / 1e3:.1f}) | {b:.0f} | {c:.0f} |")
    return out


def head_rows(rounds: int) -> list[str]:
    w = torch.randn(49152, 576) * 0.02
    kernels = {"q8 int8": Q8Int8RowKernel(w), "PyTorch int8 (bf16 act.)": Int8RowKernel(w), "dense fp32": DenseKernel(w)}
    out = ["| lm_head 49152×576, M | " + " | ".join(f"{v} µs" for v in kernels) + " |", "|---" * (len(kernels) + 1) + "|"]
    for m in (1, 2, 4, 8, 16, 32, 64):
        x = torch.randn(m, 576)
        cells = [timed([k] * 3, x, max(3, rounds // 2)) for k in kernels.values()]  # type: ignore[list-item]
        out.append(f"| {m} | " + " | ".join(f"{c:.0f}" for c in cells) + " |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if not available():
        raise SystemExit("q8 kernels unavailable here")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with torch.inference_mode():
        lines = [f"CPU: {torch.backends.cpu.get_cpu_capability()}, {args.threads} threads, {dt.date.today()}", "",
                 *int4_rows(args.rounds), "", *head_rows(args.rounds)]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
