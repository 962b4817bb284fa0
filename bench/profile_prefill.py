"""Profile the prefill of one short prompt (the twin of profile_decode.py) and write where the time goes.

    python bench/profile_prefill.py [--tokens 15 47 512] [--threads 2] [--out docs/benchmarks/prefill-profile-<date>.md]

For each prompt length: the median time of a prefill step that produces the first token (a fresh
prompt each time, prefix caching off, so every token is computed), then a torch-profiler breakdown
grouped like the decode profile. A 47-token chat prompt repeated by a client leaves 15 tokens to
compute after the prefix cache (two 16-token blocks hit), so 15 is what a warm chat TTFT pays.
Not a test: numbers depend on the machine.
"""
from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from profile_decode import GROUPS, _group_of  # noqa: E402

from awqserve.config.engine_config import EngineConfig  # noqa: E402
from awqserve.engine.llm_engine import LLMEngine  # noqa: E402
from awqserve.engine.sampling_params import SamplingParams  # noqa: E402


def prefill_once(eng: LLMEngine, rid: str, n: int, salt: int) -> float:
    """Seconds for the step(s) that turn a fresh n-token prompt into its first token."""
    eng.add_request(rid, [100 + (31 * salt + 7 * j) % 4000 for j in range(n)],
                    SamplingParams(temperature=0, max_tokens=1, ignore_eos=True))
    t0 = time.perf_counter()
    while eng.has_unfinished():
        eng.step()
    return time.perf_counter() - t0


def section(eng: LLMEngine, n: int, reps: int) -> list[str]:
    prefill_once(eng, f"warm{n}", n, 0)
    times = [prefill_once(eng, f"t{n}-{i}", n, i + 1) for i in range(reps)]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(reps):
            prefill_once(eng, f"p{n}-{i}", n, 1000 + i)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / reps / 1e3
    grouped = {g: sum(e.self_cpu_time_total for e in events if _group_of(e.key) == g) / reps / 1e3 for g in GROUPS}
    grouped["other torch ops (norms, rope, casts, attention, sampler, views)"] = total - sum(grouped.values())
    ms = statistics.median(times) * 1e3
    out = [f"## {n}-token prompt: **{ms:.1f} ms** to the first token ({n / ms * 1e3:.0f} prompt tok/s)", "",
           f"Profiled self time of torch ops: {total:.2f} ms per prefill.", "",
           "| where | ms | share |", "|---|---|---|"]
    out += [f"| {g} | {v:.2f} | {v / total:.0%} |" for g, v in grouped.items() if v > 0.005]
    out += ["", "| op | calls | ms |", "|---|---|---|"]
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:10]:
        out.append(f"| `{e.key}` | {e.count / reps:.0f} | {e.self_cpu_time_total / reps / 1e3:.3f} |")
    return out + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, nargs="+", default=[15, 47, 512])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--model", default=None, help="model dir (default: the demo model)")
    ap.add_argument("--out", default=f"docs/benchmarks/prefill-profile-{dt.date.today()}.md")
    args = ap.parse_args()
    # enforce_eager: prefill steps never run the compiled decode graphs, so skip compiling them
    eng = LLMEngine.from_config(EngineConfig(model=args.model, num_threads=args.threads, enable_prefix_caching=False,
                                             enforce_eager=True))
    lines = [f"# Prefill profile — demo model, {args.threads} threads ({dt.date.today()})", ""]
    for n in args.tokens:
        lines += section(eng, n, args.reps)
    lines += [f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
