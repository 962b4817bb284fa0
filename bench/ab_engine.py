"""A/B of two checkouts of awqserve on the same machine, same run: offline decode speed of the demo model.

For a refactor that must not change speed: each checkout runs in its own subprocess (PYTHONPATH), the
runs alternate A, B, A, B, … so drift and noise hit both alike, and the table reports every run and
the medians. Workloads (greedy, EOS ignored, compiled decode step as served by default):
- single stream: one ~40-token chat prompt, `--max-new` tokens, decode tok/s after the first token;
- 16 streams: 16 prompts generated as one continuous batch, aggregate output tok/s.

    python bench/ab_engine.py --a /path/to/old/checkout --b . [--rounds 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import json, sys, time
from awqserve import LLM, SamplingParams
threads, max_new = int(sys.argv[1]), int(sys.argv[2])
llm = LLM(None, num_threads=threads, max_model_len=1024, max_num_seqs=16, kv_cache_memory=256 << 20)
tok = llm.tokenizer
chat = tok.apply_chat_template([{"role": "user", "content": "Write a short story about a lighthouse keeper "
                                 "who finds a message in a bottle on a stormy night."}],
                               tokenize=False, add_generation_prompt=True)
ids = list(tok.encode(chat, add_special_tokens=False))
greedy = SamplingParams(temperature=0.0, max_tokens=max_new, ignore_eos=True)
llm.generate([ids], SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True))  # warm-up
single = []
for _ in range(3):
    out = llm.generate([ids], greedy)[0]
    m = out.metrics
    single.append((max_new - 1) / (m.finished_time - m.first_token_time))
batch = [ids[:-i or None] for i in range(16)]  # 16 distinct prompts (no prefix-cache hits on the last block)
t0 = time.perf_counter()
outs = llm.generate(batch, SamplingParams(temperature=0.0, max_tokens=max_new // 2, ignore_eos=True))
wall = time.perf_counter() - t0
n = sum(len(o.outputs[0].token_ids) for o in outs)
print(json.dumps({"single": sorted(single)[1], "batch16": n / wall}))
"""


def run(tree: Path, threads: int, max_new: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", _CHILD, str(threads), str(max_new)], env=env, cwd=tree,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", type=Path, required=True, help="checkout A (e.g. a git worktree of the old commit)")
    ap.add_argument("--b", type=Path, default=Path("."), help="checkout B (default: this one)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-new", type=int, default=128)
    args = ap.parse_args()
    rows: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    for r in range(args.rounds):
        for name, tree in (("A", args.a), ("B", args.b)):
            rows[name].append(run(tree.resolve(), args.threads, args.max_new))
            print(f"round {r + 1} {name}: {rows[name][-1]}", flush=True)
    print("\n| workload | A (runs) | B (runs) | median A | median B | B/A |\n|---|---|---|---|---|---|")
    for key, label in (("single", "single stream, decode tok/s"), ("batch16", "16 streams, aggregate tok/s")):
        a = [x[key] for x in rows["A"]]
        b = [x[key] for x in rows["B"]]
        ma, mb = statistics.median(a), statistics.median(b)
        fmt = lambda xs: ", ".join(f"{x:.1f}" for x in xs)  # noqa: E731
        print(f"| {label} | {fmt(a)} | {fmt(b)} | {ma:.1f} | {mb:.1f} | {mb / ma:.3f} |")


if __name__ == "__main__":
    main()
