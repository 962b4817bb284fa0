"""Markdown report of a GPU bench run (docs/benchmarks/gpu-<date>.md)."""
from __future__ import annotations

from typing import Any

from bench.gpu.common import Ceilings
from bench.gpu.kernel_checks import Check


def _checks_table(checks: list[Check]) -> list[str]:
    lines = ["| check | shape | rel. error | bound | ok | Triton ms | baselines |", "|---|---|---|---|---|---|---|"]
    for c in checks:
        ms = f"{c.ms:.3f}" if c.ms is not None else ""
        lines.append(f"| {c.name} | {c.shape} | {c.err:.2e} | {c.bound:.0e} | {'yes' if c.ok else '**NO**'} | {ms} "
                     f"| {c.baseline} |")
    return lines


def _model_table(model: dict[str, Any], context: int) -> list[str]:
    lines = [f"Decode at context {context} tokens per sequence (one step = one token per sequence):", "",
             "| batch | bytes/step (GB) | eager tok/s | graph tok/s | roofline tok/s | ratio | graph vs eager err |",
             "|---|---|---|---|---|---|---|"]
    for b, row in model["decode"].items():
        eager = int(b) / row["eager_ms"] * 1e3
        graph = int(b) / row["graph_ms"] * 1e3 if "graph_ms" in row else None
        best = max(eager, graph or 0.0)
        lines.append(f"| {b} | {row['bytes'] / 1e9:.2f} | {eager:,.1f} | {f'{graph:,.1f}' if graph else '—'} | "
                     f"{row['roofline_tok_s']:,.0f} | {best / row['roofline_tok_s']:.1%} | "
                     f"{row.get('graph_err', float('nan')):.1e} |")
    lines += ["", "Prefill of one sequence (eager, logits of the last position):", "",
              "| tokens | ms | tok/s | roofline tok/s | ratio |", "|---|---|---|---|---|"]
    for n, row in model["prefill"].items():
        tok_s = int(n) / row["ms"] * 1e3
        lines.append(f"| {n} | {row['ms']:,.1f} | {tok_s:,.0f} | {row['roofline_tok_s']:,.0f} | "
                     f"{tok_s / row['roofline_tok_s']:.1%} |")
    return lines


def render(env: dict[str, str], ceil: Ceilings, checks: list[Check], model: dict[str, Any] | None, context: int,
           config: str, date: str) -> str:
    ok = all(c.ok for c in checks)
    lines = [f"# GPU bench {date}: Triton kernels and the dummy `{config}`", "",
             "Produced by `bench/gpu/run.sh` (bench/gpu/main.py). " + ", ".join(f"{k} {v}" for k, v in env.items()) + ".",
             f"Measured ceilings: copy {ceil.bandwidth / 1e12:.2f} TB/s (read + write), bf16 matmul "
             f"{ceil.flops / 1e12:.0f} TFLOP/s. Roofline = max(bytes / copy rate, FLOPs / matmul rate); bytes "
             "count every non-expert weight, the experts a batch touches under uniform routing, and per sequence "
             "its GDN state read + written and its KV read (bench/gpu/common.py).", "",
             f"## Correctness ({'all passed' if ok else 'FAILURES'})", "", *_checks_table(checks)]
    if model is not None:
        inv = model["inventory"]
        lines += ["", "## Dummy model", "",
                  f"Weights on the GPU {model['weights_bytes'] / 1e9:.2f} GB (experts {inv['experts'] / 1e9:.2f} GB); "
                  f"built in {model['load_s']:.1f} s; CUDA graphs {model['graphs']} captured in "
                  f"{model['capture_s']:.1f} s; peak allocated {model['max_memory'] / 2**30:.1f} GiB. "
                  f"GDN state {inv['state_per_seq'] / 2**20:.1f} MiB per sequence, KV {inv['kv_per_token'] / 1024:.0f} "
                  f"KiB per token.", "", *_model_table(model, context)]
    return "\n".join(lines) + "\n"
