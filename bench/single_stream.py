"""In-process runs: single-stream decode (workload 1) and offline batch throughput (workload 4).

Single stream: the model's chat template around one ~40-token question, greedy, exactly `max_new`
tokens (EOS ignored). Decode tok/s counts the tokens after the first over the time after the first
(so it excludes the prefill); TTFT is call → first token. Median over `reps` after one warm-up.

Offline throughput: a list of (prompt ids, max tokens) handed to awqserve's `LLM.generate` in one
call (the engine batches them), or run one after another on engines without batching; the figure is
total output tokens / wall time.

    python bench/single_stream.py --system llama.cpp [--max-new 128] [--reps 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import AwqserveEngine, CHAT_MESSAGES, Engine, Timing, Tokenizer, demo_gguf  # noqa: E402


def chat_prompt_ids(tok: Tokenizer) -> list[int]:
    return tok.encode(tok.chat_text(CHAT_MESSAGES))


def measure_single(engine: Engine, prompt_ids: list[int], max_new: int = 128, reps: int = 3) -> dict[str, Any]:
    """Median decode tok/s and TTFT over `reps` greedy runs of exactly `max_new` tokens."""
    engine.generate(prompt_ids, min(8, max_new))  # warm-up: lazy init, allocator, thread pools
    runs: list[Timing] = [engine.generate(prompt_ids, max_new) for _ in range(reps)]
    if any(t.n_out != max_new for t in runs):
        raise RuntimeError(f"expected {max_new} tokens, got {[t.n_out for t in runs]}")
    return {
        "prompt_tokens": len(prompt_ids), "new_tokens": max_new, "reps": reps,
        "decode_tok_s": statistics.median(t.decode_tok_s for t in runs),
        "ttft_ms": 1e3 * statistics.median(t.ttft_s for t in runs),
        "e2e_tok_s": statistics.median(t.n_out / (t.ttft_s + t.decode_s) for t in runs),
        "runs_decode_tok_s": [round(t.decode_tok_s, 2) for t in runs],
    }


def measure_offline(engine: Engine, requests: list[tuple[list[int], int]]) -> dict[str, Any]:
    """Total output tokens / wall for the whole list: batched on awqserve, sequential elsewhere."""
    t0 = time.perf_counter()
    if isinstance(engine, AwqserveEngine):
        params = [engine.params(m) for _, m in requests]
        outs = engine.run([engine.prompt(p) for p, _ in requests], params)
        produced = sum(len(o.outputs[0].token_ids) for o in outs)
        mode = "LLM.generate, one batched call"
    else:
        produced = sum(engine.generate(p, m).n_out for p, m in requests)
        mode = "sequential, one request at a time"
    wall = time.perf_counter() - t0
    wanted = sum(m for _, m in requests)
    result = {"requests": len(requests), "input_tokens": sum(len(p) for p, _ in requests),
              "output_tokens": produced, "wall_s": wall, "output_tok_s": produced / wall, "mode": mode}
    if produced != wanted:
        result["note"] = f"produced {produced} of {wanted} requested tokens"
    return result


def make_engine(system: str, model: str | None = None, threads: int = 2, n_ctx: int = 8192) -> Engine:
    """Build one in-process engine by name: awqserve, llama.cpp, transformers."""
    from peers import LlamaCppEngine, TransformersEngine

    if system == "awqserve":
        return AwqserveEngine(model, threads)
    if system == "llama.cpp":
        return LlamaCppEngine(demo_gguf(), n_ctx=n_ctx, threads=threads)
    if system == "transformers":
        return TransformersEngine(demo_gguf(), threads)
    raise ValueError(f"unknown system {system!r}")


def main() -> int:
    ap = argparse.ArgumentParser(description="single-stream decode benchmark (one system)")
    ap.add_argument("--system", required=True, choices=["awqserve", "llama.cpp", "transformers"])
    ap.add_argument("--model", default=None, help="awqserve model dir (default: the demo model)")
    ap.add_argument("--max-new", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    tok = Tokenizer(demo_gguf())
    engine = make_engine(args.system, args.model, args.threads)
    print(json.dumps(measure_single(engine, chat_prompt_ids(tok), args.max_new, args.reps), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
