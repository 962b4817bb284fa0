"""Offline throughput: continuous batching vs a sequential loop over the same requests.

    python bench/bench_offline.py [--model DIR] [--num-requests 32] [--output-len 64]

Both runs use one LLMEngine (prefix caching off, so neither side reuses the other's prompt
blocks), greedy decoding and `ignore_eos`, so both generate exactly the same number of tokens.
Prints the ratio and writes docs/benchmarks/offline-<date>.md with the hardware and settings.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from awqserve.config.engine_config import EngineConfig  # noqa: E402
from awqserve.engine.llm_engine import LLMEngine  # noqa: E402
from awqserve.engine.sampling_params import SamplingParams  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOPICS = ["the sea", "a library", "mountains", "a robot", "coffee", "winter", "a city at night", "music"]


def make_prompts(engine: LLMEngine, n: int) -> list[list[int]]:
    """Chat prompts of varied lengths (about 20–60 tokens)."""
    from awqserve.loader.tokenizer import apply_chat_template

    prompts = []
    for i in range(n):
        detail = " Mention colours, sounds and smells." * (i % 4)
        msg = f"Write a short story about {TOPICS[i % len(TOPICS)]} (story {i}).{detail}"
        prompts.append(apply_chat_template(engine.tokenizer, [{"role": "user", "content": msg}]))
    return prompts


def run_batch(engine: LLMEngine, prompts: list[list[int]], params: SamplingParams, tag: str) -> tuple[float, int]:
    """Submit all prompts at once and step until done: (seconds, generated tokens)."""
    t0 = time.perf_counter()
    for i, p in enumerate(prompts):
        engine.add_request(f"{tag}-{i}", p, params)
    tokens = 0
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                tokens += len(out.outputs[0].token_ids)
    return time.perf_counter() - t0, tokens


def run_sequential(engine: LLMEngine, prompts: list[list[int]], params: SamplingParams) -> tuple[float, int]:
    seconds, tokens = 0.0, 0
    for i, p in enumerate(prompts):
        s, t = run_batch(engine, [p], params, f"seq{i}")
        seconds, tokens = seconds + s, tokens + t
    return seconds, tokens


def write_report(args: argparse.Namespace, engine: LLMEngine, prompts: list[list[int]],
                 batch: tuple[float, int], seq: tuple[float, int]) -> Path:
    out = ROOT / "docs" / "benchmarks" / f"offline-{dt.date.today().isoformat()}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    b_tps, s_tps = batch[1] / batch[0], seq[1] / seq[0]
    lens = [len(p) for p in prompts]
    cpu = platform.processor() or platform.machine()
    cfg = engine.config
    out.write_text(f"""# Offline throughput: batched vs sequential ({dt.date.today().isoformat()})

`python {" ".join(sys.argv)}`

| setting | value |
|---|---|
| model | `{engine.info.model_path}` ({engine.info.quant_info.method if engine.info.quant_info else 'n/a'}) |
| device / dtype | {engine.device} / {engine.dtype} |
| hardware | {cpu}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}, torch {torch.__version__} |
| requests | {len(prompts)}, prompt tokens {min(lens)}–{max(lens)} (total {sum(lens)}) |
| output | {args.output_len} tokens each, greedy, ignore_eos |
| engine | max_num_seqs {cfg.max_num_seqs}, max_num_batched_tokens {cfg.max_num_batched_tokens}, \
block_size {cfg.block_size}, prefix caching off |

| mode | seconds | generated tokens | tokens/s |
|---|---|---|---|
| batched (continuous batching) | {batch[0]:.2f} | {batch[1]} | {b_tps:.1f} |
| sequential (one request at a time) | {seq[0]:.2f} | {seq[1]} | {s_tps:.1f} |

**Ratio batched / sequential: {b_tps / s_tps:.2f}x** (target >= 3x).
""")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model dir (default: the demo model)")
    ap.add_argument("--num-requests", type=int, default=32)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--max-num-seqs", type=int, default=64)
    ap.add_argument("--max-num-batched-tokens", type=int, default=2048)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-report", action="store_true", help="do not write docs/benchmarks/offline-<date>.md")
    args = ap.parse_args()
    engine = LLMEngine.from_config(EngineConfig(model=args.model, device=args.device, max_model_len=1024,
                                    max_num_seqs=args.max_num_seqs, enable_prefix_caching=False,
                                    max_num_batched_tokens=args.max_num_batched_tokens, num_threads=args.threads))
    prompts = make_prompts(engine, args.num_requests)
    params = SamplingParams(temperature=0.0, max_tokens=args.output_len, ignore_eos=True)
    run_batch(engine, prompts[:4], SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True), "warmup")
    batch = run_batch(engine, prompts, params, "batch")
    print(f"batched:    {batch[1]} tokens in {batch[0]:.2f}s = {batch[1] / batch[0]:.1f} tok/s")
    seq = run_sequential(engine, prompts, params)
    print(f"sequential: {seq[1]} tokens in {seq[0]:.2f}s = {seq[1] / seq[0]:.1f} tok/s")
    print(f"ratio: {(batch[1] / batch[0]) / (seq[1] / seq[0]):.2f}x")
    if not args.no_report:
        print(f"report: {write_report(args, engine, prompts, batch, seq)}")


if __name__ == "__main__":
    main()
