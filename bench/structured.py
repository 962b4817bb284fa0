"""Structured outputs: what a JSON-schema constraint costs next to free text, in one run.

In-process engine (offline `LLM`, the compiled CPU decode step as served), demo model, greedy:
- decode tok/s, free text vs a JSON schema whose one string must be long (so neither side stops
  early), at 1 stream and 16 streams (one continuous batch), alternating runs, medians;
- mask cost: time spent filling and applying token masks per constrained token (µs), measured
  around `StructuredOutputManager.apply`;
- compile: first grammar (includes building the tokenizer trie, once per model), a new schema cold,
  and the same schema again (cached).
Writes docs/benchmarks/structured-<date>.md.

    python bench/structured.py [--threads 2] [--max-new 96] [--rounds 3]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from awqserve import LLM, SamplingParams
from awqserve.structured import GrammarSpec

ROOT = Path(__file__).resolve().parents[1]
STORY = {"type": "object", "properties": {"story": {"type": "string", "minLength": 1500, "maxLength": 4000}},
         "required": ["story"], "additionalProperties": False}
ASK = "Write a JSON object with a long story about a lighthouse keeper."


def _prompts(llm: LLM, n: int) -> list[list[int]]:
    tok = llm.tokenizer
    text = tok.apply_chat_template([{"role": "user", "content": ASK}], tokenize=False, add_generation_prompt=True)
    ids = list(tok.encode(text, add_special_tokens=False))
    return [ids[: len(ids) - i] if i else ids for i in range(n)]  # distinct prompts: no shared last block


def _run(llm: LLM, prompts: list[list[int]], max_new: int, grammar: GrammarSpec | None) -> float:
    params = SamplingParams(temperature=0.0, max_tokens=max_new, ignore_eos=True, grammar=grammar)
    t0 = time.perf_counter()
    outs = llm.generate(prompts, params)
    wall = time.perf_counter() - t0
    return sum(len(o.outputs[0].token_ids) for o in outs) / wall


def _mask_timer(llm: LLM) -> dict[str, float]:
    manager = llm.engine.structured
    acc = {"s": 0.0, "rows": 0.0}
    real = manager.apply

    def timed(logits: Any, requests: Any) -> None:
        t0 = time.perf_counter()
        real(logits, requests)
        acc["s"] += time.perf_counter() - t0
        acc["rows"] += sum(1 for r in requests if r.grammar is not None)

    manager.apply = timed  # type: ignore[method-assign]
    return acc


def _compile_times(llm: LLM) -> dict[str, float]:
    m = llm.engine.structured
    t0 = time.perf_counter()
    m.compile(GrammarSpec.json_object()).result()
    first = time.perf_counter() - t0
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                                               "tags": {"type": "array", "items": {"enum": ["a", "b"]}}},
              "required": ["city", "days"]}
    t0 = time.perf_counter()
    m.compile(GrammarSpec.json_schema(schema)).result()
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    m.compile(GrammarSpec.json_schema(schema)).result()
    cached = time.perf_counter() - t0
    return {"first_ms": first * 1e3, "cold_ms": cold * 1e3, "cached_ms": cached * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-new", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    llm = LLM(None, num_threads=args.threads, max_model_len=1024, max_num_seqs=16, kv_cache_memory=256 << 20)
    compile_ms = _compile_times(llm)
    spec = GrammarSpec.json_schema(STORY)
    acc = _mask_timer(llm)
    res: dict[str, list[float]] = {k: [] for k in ("free1", "json1", "free16", "json16")}
    for _ in range(args.rounds):
        for streams in (1, 16):
            prompts = _prompts(llm, streams)
            res[f"free{streams}"].append(_run(llm, prompts, args.max_new, None))
            res[f"json{streams}"].append(_run(llm, prompts, args.max_new, spec))
    med = {k: statistics.median(v) for k, v in res.items()}
    mask_us = acc["s"] / max(acc["rows"], 1) * 1e6
    _write(args, res, med, mask_us, compile_ms)


def _write(args: argparse.Namespace, res: dict[str, list[float]], med: dict[str, float], mask_us: float,
           compile_ms: dict[str, float]) -> None:
    day = dt.date.today().isoformat()
    runs = lambda k: ", ".join(f"{x:.1f}" for x in res[k])  # noqa: E731
    lines = [f"# Structured outputs: cost of a JSON-schema constraint ({day})", "",
             f"`python bench/structured.py --threads {args.threads} --max-new {args.max_new} --rounds {args.rounds}`; "
             f"demo model, compiled decode step, greedy, {platform.processor() or platform.machine()}, "
             f"{args.threads} threads. Backend llguidance; schema: one string of 1500-4000 characters (so "
             "neither run stops before max_tokens).", "",
             "| streams | free text tok/s (runs) | json_schema tok/s (runs) | median free | median json | json / free |",
             "|---|---|---|---|---|---|"]
    for n in (1, 16):
        f, j = med[f"free{n}"], med[f"json{n}"]
        lines.append(f"| {n} | {runs(f'free{n}')} | {runs(f'json{n}')} | {f:.1f} | {j:.1f} | {j / f:.3f} |")
    lines += ["", f"Mask cost (fill + apply, per constrained token, all runs): **{mask_us:.0f} µs**.", "",
              "| compile | ms |", "|---|---|",
              f"| first grammar of the process: builds the tokenizer trie once (the server does this at start, "
              f"`StructuredOutputManager.prewarm`) | {compile_ms['first_ms']:.0f} |",
              f"| a new schema, cold | {compile_ms['cold_ms']:.1f} |",
              f"| the same schema again (cache) | {compile_ms['cached_ms']:.2f} |", ""]
    out = ROOT / "docs" / "benchmarks" / f"structured-{day}.md"
    out.write_text("\n".join(lines))
    (out.with_suffix(".json")).write_text(json.dumps({"runs": res, "median": med, "mask_us": mask_us,
                                                      "compile_ms": compile_ms}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
