"""Grammar backends for structured outputs, measured side by side: xgrammar vs llguidance.

For each importable library and each vocabulary (the demo model's 49,152 tokens; a Qwen3 tokenizer
with a 151,936-row logits vocab when `--qwen-tokenizer` points at one) it measures:

- tokenizer info: the one-time build from the HF tokenizer;
- compile, cold (first time this grammar is seen) and cached (what a repeat request pays), plus a
  new matcher for a request from the compiled grammar;
- mask time per token while walking a real accepted answer token by token: the first request's walk
  ("cold": lazy lexer/automaton states get built) and later requests' walks ("warm", each with a new
  matcher from the same compiled grammar), median and p99;
- a batch of 16 matchers walking in lockstep, one 16-row bitmask filled per step.

Workloads: a nested json_schema, json_object, a regex, a choice, and Qwen3's hermes tool calls
("required": calls only; "auto": free text, then a call). The two libraries live in separate
virtualenvs (xgrammar pulls torch + triton), so run this once per venv and merge:

    /tmp/xgvenv/bin/python bench/structured_backends.py --qwen-tokenizer /tmp/qwen3_tok --json /tmp/xg.json
    /tmp/llgvenv/bin/python bench/structured_backends.py --qwen-tokenizer /tmp/qwen3_tok --json /tmp/llg.json
    python bench/structured_backends.py --report /tmp/xg.json /tmp/llg.json

`--library awqserve` measures awqserve.structured (our wrapper over the kept library) the same way.
The Qwen3 tokenizer comes from bench/qwen3_tokenizer_from_gguf.py (not committed).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from structured_adapters import ADAPTERS  # noqa: E402
from structured_workloads import WORKLOADS, Workload  # noqa: E402

BATCH = 16
LIBRARIES = ("xgrammar", "llguidance", "awqserve")


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _p99(xs: list[float]) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(0.99 * (len(s) - 1))))]


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out

def _walk(a: Any, m: Any, tokens: list[int], bitmask: Any) -> list[float]:
    """Fill the mask before each answer token, check the token is allowed, accept it: fill times (s)."""
    times = []
    for t in tokens:
        t0 = time.perf_counter()
        a.fill(m, bitmask, 0)
        times.append(time.perf_counter() - t0)
        if not (int(bitmask[0, t // 32]) >> (t % 32)) & 1 or not a.accept(m, t):
            raise AssertionError(f"{a.name}: answer token {t} rejected after {len(times) - 1} tokens")
    return times


def _walk_batch(a: Any, ms: list[Any], tokens: list[int], bitmask: Any) -> list[float]:
    times = []
    for t in tokens:
        t0 = time.perf_counter()
        a.fill_batch(ms, bitmask)
        times.append(time.perf_counter() - t0)
        for m in ms:
            a.accept(m, t)
    return times


def measure_workload(a: Any, w: Workload, tokens: list[int], repeats: int) -> dict[str, Any]:
    """Compile cold/cached, new-matcher cost, cold and warm walks, and the batch-16 walk."""
    cold, cached, new_matcher, cold_walk, warm_walk, batch = [], [], [], [], [], []
    bitmask, bitmask16 = a.bitmask(1), a.bitmask(BATCH)
    for _ in range(repeats):
        a.clear_cache()
        dt, compiled = _timed(lambda: a.compile(w))
        cold.append(dt)
        cached.append(_timed(lambda: a.compile(w))[0])
        dt, m = _timed(lambda: a.matcher(compiled))
        new_matcher.append(dt)
        cold_walk += _walk(a, m, tokens, bitmask)
        for _ in range(3):  # later requests: each its own new matcher, as in serving
            warm_walk += _walk(a, a.matcher(compiled), tokens, bitmask)
        ms = [a.matcher(compiled) for _ in range(BATCH)]
        batch += _walk_batch(a, ms, tokens, bitmask16)
    us = 1e6
    return {
        "tokens": len(tokens),
        "compile_cold_ms": _median(cold) * 1e3, "compile_cached_ms": _median(cached) * 1e3,
        "new_matcher_ms": _median(new_matcher) * 1e3,
        "mask_cold_med_us": _median(cold_walk) * us, "mask_cold_p99_us": _p99(cold_walk) * us,
        "mask_warm_med_us": _median(warm_walk) * us, "mask_warm_p99_us": _p99(warm_walk) * us,
        "batch16_med_us": _median(batch) * us, "batch16_p99_us": _p99(batch) * us,
    }


def measure_library(lib: str, vocabs: dict[str, tuple[Any, int, list[int]]], repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {"library": lib, "version": _version(lib), "vocabs": {}}
    for vname, (tok, vocab_size, eos) in vocabs.items():
        builds = []
        a = None
        for _ in range(3):
            a = ADAPTERS[lib](tok, vocab_size, eos)
            builds.append(a.build_s)
        res: dict[str, Any] = {"vocab_size": vocab_size, "tokenizer_len": len(tok),
                               "tokenizer_info_ms": _median(builds) * 1e3, "workloads": {}}
        for w in WORKLOADS:
            tokens = tok.encode(w.answer, add_special_tokens=False)
            res["workloads"][w.name] = measure_workload(a, w, tokens, repeats)
            print(f"  {lib} {vname} {w.name}: {json.dumps(res['workloads'][w.name])}", file=sys.stderr)
        out["vocabs"][vname] = res
    return out


def _version(lib: str) -> str:
    from importlib.metadata import version
    return f"(llguidance {version('llguidance')})" if lib == "awqserve" else version(lib)


def measure_apply(vocab_sizes: list[int], repeats: int = 30) -> dict[str, float]:
    """awqserve's apply_bitmask on CPU float32 logits: median µs for 1 and 16 rows per vocab size."""
    import torch
    from awqserve.structured import allocate_bitmask, apply_bitmask
    out = {}
    for vocab in vocab_sizes:
        for rows in (1, 16):
            logits = torch.randn(rows, vocab)
            mask = allocate_bitmask(rows, vocab)
            mask[:, 1::2] = 0  # half the words cleared: a mixed mask
            times = [_timed(lambda: apply_bitmask(logits, mask))[0] for _ in range(repeats)]
            out[f"V={vocab} rows={rows}"] = _median(times) * 1e6
    return out


def machine() -> dict[str, Any]:
    model = next((ln.split(":", 1)[1].strip() for ln in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines() if ln.startswith("Model name")), "?")
    import torch
    import transformers
    return {"cpu": model, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "loadavg_before": os.getloadavg(),
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "date": time.strftime("%Y-%m-%d %H:%M")}


def load_vocabs(args: argparse.Namespace) -> dict[str, tuple[Any, int, list[int]]]:
    from transformers import AutoTokenizer
    vocabs = {}
    demo = args.demo_tokenizer or _demo_dir()
    if demo:
        tok = AutoTokenizer.from_pretrained(demo)
        vocabs["demo-49k"] = (tok, 49152, [tok.eos_token_id])
    if args.qwen_tokenizer and Path(args.qwen_tokenizer).exists():
        tok = AutoTokenizer.from_pretrained(args.qwen_tokenizer)
        eos = tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
        vocabs["qwen3-152k"] = (tok, 151936, eos)
    elif args.qwen_tokenizer:
        print(f"skipping the Qwen3 vocabulary: {args.qwen_tokenizer} not found", file=sys.stderr)
    return vocabs


def _demo_dir() -> str | None:
    p = Path(__file__).resolve().parent.parent / "docs" / "dev" / "DEMO_MODEL_PATH.txt"
    d = p.read_text().strip() if p.exists() else ""
    return d if d and (Path(d) / "tokenizer.json").exists() else None


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------

COLUMNS = [("compile_cold_ms", "compile cold ms"), ("compile_cached_ms", "cached ms"),
           ("new_matcher_ms", "new matcher ms"), ("mask_cold_med_us", "mask cold med µs"),
           ("mask_warm_med_us", "mask warm med µs"), ("mask_warm_p99_us", "warm p99 µs"),
           ("batch16_med_us", "batch-16 med µs/step"), ("batch16_p99_us", "batch-16 p99 µs")]


def report(results: list[dict[str, Any]]) -> str:
    lines = []
    for vname in sorted({v for r in results for v in r["vocabs"]}):
        lines.append(f"\n### {vname}\n")
        lines.append("| library | tokenizer info ms |")
        lines.append("|---|---|")
        for r in results:
            if vname in r["vocabs"]:
                lines.append(f"| {r['library']} {r['version']} | {r['vocabs'][vname]['tokenizer_info_ms']:.0f} |")
        lines.append("\n| workload | library | tokens | " + " | ".join(c[1] for c in COLUMNS) + " |")
        lines.append("|---|---|---|" + "---|" * len(COLUMNS))
        for w in WORKLOADS:
            for r in results:
                if vname not in r["vocabs"]:
                    continue
                row = r["vocabs"][vname]["workloads"][w.name]
                cells = " | ".join(_fmt(row[c[0]]) for c in COLUMNS)
                lines.append(f"| {w.name} | {r['library']} | {row['tokens']} | {cells} |")
    return "\n".join(lines)


def _fmt(x: float) -> str:
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 10 else f"{x:.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qwen-tokenizer", help="directory of a Qwen3 tokenizer (skipped when absent)")
    ap.add_argument("--demo-tokenizer", help="the demo model directory (default: docs/dev/DEMO_MODEL_PATH.txt)")
    ap.add_argument("--library", action="append", choices=LIBRARIES,
                    help="library to measure (repeatable; default: xgrammar and llguidance if importable)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, help="write the raw numbers here")
    ap.add_argument("--report", nargs="+", type=Path, help="render a table from JSON files and exit")
    args = ap.parse_args()
    if args.report:
        runs = [json.loads(p.read_text()) for p in args.report]
        print(report([r for run in runs for r in run["results"]]))
        for run in runs:
            if "apply_bitmask_us" in run:
                print("\napply_bitmask (µs, median): " + json.dumps(run["apply_bitmask_us"]))
        return
    libs = args.library or [x for x in ("xgrammar", "llguidance") if importlib.util.find_spec(x)]
    vocabs = load_vocabs(args)
    data: dict[str, Any] = {"machine": machine(),
                            "results": [measure_library(lib, vocabs, args.repeats) for lib in libs]}
    if "awqserve" in libs:
        data["apply_bitmask_us"] = measure_apply(sorted({v[1] for v in vocabs.values()}))
    data["machine"]["loadavg_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(data, indent=1))
    print(report(data["results"]))
    if "apply_bitmask_us" in data:
        print("\napply_bitmask (µs, median): " + json.dumps(data["apply_bitmask_us"]))


if __name__ == "__main__":
    main()
