"""Profile one decode step of the demo model (torch profiler) and write where the time goes.

    python bench/profile_decode.py [--batch 1] [--threads 2] [--out docs/benchmarks/decode-profile-<date>.md]

The table groups ops by kind (int4 matmuls, dense matmuls = lm_head, attention, everything else)
and lists the top ops, so the next lever is visible. Not a test: numbers depend on the machine.
"""
from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from awqserve.config.engine_config import EngineConfig
from awqserve.engine.llm_engine import LLMEngine
from awqserve.engine.sampling_params import SamplingParams

GROUPS = {
    "q8 int4 matmul (kernels/cpu)": ("awqserve::q8_w4_mm",),
    "q8 int8 lm_head (kernels/cpu)": ("awqserve::q8_w8_mm",),
    "int4 matmul (tinygemm)": ("aten::_weight_int4pack_mm_for_cpu",),
    "lm_head int8 (<= 4 rows)": ("aten::_weight_int8pack_mm",),
    "packed bf16 matmul (oneDNN; lm_head above 4 rows, every linear when rows > 8)": (
        "mkldnn::_linear_pointwise", "awqserve::packed_linear"),
    "plain dense matmul": ("aten::mm", "aten::addmm", "aten::linear", "aten::matmul"),
    "compiled graph: fused C++ loops (norms, RoPE, attention, SiLU) + its Python wrapper":
        ("## Call CompiledFxGraph",),
    "eager attention (SDPA + KV gather/scatter; mixed or uncompiled steps)": (
        "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::index_select", "aten::index_copy_"),
}


def _group_of(key: str) -> str | None:
    return next((g for g, names in GROUPS.items() if any(key.startswith(n) for n in names)), None)


def decode_engine(batch: int, threads: int, model: str | None, eager: bool = False,
                  prompt_len: int = 40) -> LLMEngine:
    eng = LLMEngine.from_config(EngineConfig(model=model, num_threads=threads, enable_prefix_caching=False,
                                 max_num_seqs=max(batch, 16), enforce_eager=eager))
    for i in range(batch):
        eng.add_request(f"r{i}", [100 + (7 * i + j) % 4000 for j in range(prompt_len)],
                        SamplingParams(temperature=0, max_tokens=4096, ignore_eos=True))
    while any(r.num_output_tokens < 8 for r in eng.scheduler.running) or eng.scheduler.waiting:
        eng.step()  # prefill (chunked for long prompts) + warm-up decode steps
    return eng


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt-len", type=int, default=40, help="prompt tokens per sequence (the decode context)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--model", default=None, help="model dir (default: the demo model)")
    ap.add_argument("--enforce-eager", action="store_true", help="profile the eager step instead")
    ap.add_argument("--out", default=f"docs/benchmarks/decode-profile-{dt.date.today()}.md")
    args = ap.parse_args()
    eng = decode_engine(args.batch, args.threads, args.model, args.enforce_eager, args.prompt_len)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        eng.step()
    step_ms = (time.perf_counter() - t0) / args.steps * 1e3
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            eng.step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / args.steps / 1e3
    grouped = {g: sum(e.self_cpu_time_total for e in events if _group_of(e.key) == g) / args.steps / 1e3
               for g in GROUPS}
    grouped["other torch ops (norms, rope, casts, sampler, views)"] = total - sum(grouped.values())
    lines = [f"# Decode-step profile — demo model, batch {args.batch}, {args.threads} threads ({dt.date.today()})", "",
             f"Unprofiled step: **{step_ms:.2f} ms** ({args.batch * 1e3 / step_ms:.1f} tok/s). "
             f"Profiled self time of torch ops: {total:.2f} ms per step; the difference to the "
             f"unprofiled step is Python overhead (module calls, scheduler, sampler, detokenizer) "
             f"plus profiler cost.", "", "| where | ms per step | share of op time |", "|---|---|---|"]
    lines += [f"| {g} | {ms:.2f} | {ms / total:.0%} |" for g, ms in grouped.items()]
    lines += ["", "Top ops (self CPU time per step):", "", "| op | calls/step | ms/step |", "|---|---|---|"]
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:15]:
        lines.append(f"| `{e.key}` | {e.count / args.steps:.0f} | {e.self_cpu_time_total / args.steps / 1e3:.3f} |")
    lines += ["", f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}; "
              f"decode step {'eager' if args.enforce_eager else 'compiled'}, lm_head int8 for <= 4 rows."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
