"""CPU linear-kernel benchmark on the demo model's layer shapes (SmolLM2-135M).

Times, per layer shape and rows M, with fp32 activations in and out (as the engine calls them):
int4 (PyTorch CPU int4 matmul, bf16 inside), dense fp32 and dense bf16 (dequantized copies).
Medians of repeated runs, since other processes share the CPU. With --out, the table replaces the marked block of that markdown file (prose is kept).

    python bench/bench_linear_kernels.py [--threads 2] [--group 64] [--rounds 15] \
        [--out docs/benchmarks/cpu-linear-kernels.md]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from awqserve.layers.linear import DenseKernel
from awqserve.quant.kernels import Int4CpuKernel, cpu_has_native_bf16, cpu_int4_max_m
from awqserve.quant.packing import quantize_rtn

SHAPES = [  # (name, N out, K in)
    ("q / o", 576, 576), ("k, v", 192, 576), ("qkv fused", 960, 576), ("gate, up", 1536, 576),
    ("gate_up fused", 3072, 576), ("down", 576, 1536), ("lm_head", 49152, 576),
]
MS = (1, 4, 8, 16, 64, 256)
VARIANTS = ("int4", "dense fp32", "dense bf16")
MARK_START = "<!-- bench_linear_kernels.py: start -->"
MARK_END = "<!-- bench_linear_kernels.py: end -->"


def run_all(group: int, rounds: int) -> dict[tuple[str, int, str], float]:
    """Time every (layer, M, variant); returns µs keyed by (layer name, M, variant).

    Each round walks the whole grid and keeps, per variant, the best of a few calls; the result is the
    median over rounds. Rounds are spread over the whole run, so a burst of load from other processes
    (on a busy 2-core machine two OpenMP threads stall in multiples of ~8 ms) spoils at most a round.
    """
    torch.manual_seed(0)
    cases = []
    for name, n, k in SHAPES:
        qt = quantize_rtn(torch.randn(n, k) * 0.02, group, symmetric=True)
        kernels = {"int4": Int4CpuKernel(qt), "dense fp32": DenseKernel(qt.dequantize(torch.float32)),
                   "dense bf16": DenseKernel(qt.dequantize(torch.float32).to(torch.bfloat16))}
        for m in MS:
            reps = 1 if n * k * m > 2e8 else 3  # lm_head at large M: one call per round is plenty
            cases.append((name, m, torch.randn(m, k), kernels, reps))
    samples: dict[tuple[str, int, str], list[float]] = {}
    with torch.inference_mode():
        for _, _, x, kernels, _ in cases:  # warm-up
            for kern in kernels.values():
                kern(x)
        for _ in range(rounds):
            for name, m, x, kernels, reps in cases:
                for variant, kern in kernels.items():
                    best = float("inf")
                    for _ in range(reps):
                        t0 = time.perf_counter()
                        kern(x)
                        best = min(best, time.perf_counter() - t0)
                    samples.setdefault((name, m, variant), []).append(best)
    return {key: statistics.median(v) * 1e6 for key, v in samples.items()}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def render(res: dict[tuple[str, int, str], float], args: argparse.Namespace, elapsed: float,
           loads: tuple[str, str]) -> str:
    lines = [
        "| layer (N×K) | M | " + " | ".join(VARIANTS) + " | fastest | int4 / best dense |",
        "|---|---:|" + "---:|" * len(VARIANTS) + "---|---:|",
    ]
    for name, n, k in SHAPES:
        for m in MS:
            vals = [res[(name, m, v)] for v in VARIANTS]
            best = VARIANTS[vals.index(min(vals))]
            cells = " | ".join(f"{v:,.0f}" for v in vals)
            lines.append(f"| {name} ({n}×{k}) | {m} | {cells} | {best} | {vals[0] / min(vals[1:]):.2f} |")
    head = [
        f"- date: {dt.date.today().isoformat()}; torch {torch.__version__}; CPU: {cpu_name()} "
        f"({os.cpu_count()} logical cores, capability {torch.backends.cpu.get_cpu_capability()}, "
        f"native bf16: {cpu_has_native_bf16()}); torch threads: {args.threads}",
        f"- int4 weights: symmetric, group {args.group}; activations fp32 in and out (conversions included)",
        f"- µs per call: median over {args.rounds} rounds (spread over the run) of the best of 3 calls "
        f"(1 call for lm_head at M ≥ 8); load average at start / end: {loads[0]} / {loads[1]} "
        f"(shared machine); run took {elapsed:.0f} s",
    ]
    return "\n".join(head + [""] + lines) + "\n"


def loadavg() -> str:
    path = Path("/proc/loadavg")
    return path.read_text().split()[0] if path.exists() else "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--group", type=int, default=64, help="576 = 9*64, so 128 does not divide K here")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", type=Path, default=None, help="write the table here (default: print only)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load0, t0 = loadavg(), time.perf_counter()
    res = run_all(args.group, args.rounds)
    table = render(res, args, time.perf_counter() - t0, (load0, loadavg()))
    print(table)
    print(f"(hybrid rule in use on this CPU: int4 for M <= {cpu_int4_max_m()}, dense above)")
    if args.out:
        write_table(args.out, table)
    return 0


def write_table(path: Path, table: str) -> None:
    """Replace the text between the bench markers of `path` (keeps the prose), or create the file."""
    block = f"{MARK_START}\n{table}{MARK_END}\n"
    text = path.read_text() if path.exists() else ""
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        text = head + block + rest.split(MARK_END, 1)[1].lstrip("\n")
    else:
        text = text + ("\n" if text else "# CPU linear kernels\n\n") + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
