"""Prefill (workload 2): time to first token for long prompts, and prefill tok/s = prompt tokens / TTFT.

Each measured prompt is a fresh window of the fixed corpus at its own offset, so no engine reuses a
cached prefix from an earlier call. At the context limit the prompt is `limit - 2` tokens, so the
one output token fits with a token to spare. One output token per call (`max_tokens=1`).

    python bench/prefill.py --system llama.cpp --lengths 512 2048 8192 [--reps 2]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import corpus_text, windows  # noqa: E402
from peers import CONTEXT_LIMIT, Engine, Tokenizer, demo_gguf  # noqa: E402


def prompt_tokens_for(length: int, limit: int = CONTEXT_LIMIT) -> int:
    """Prompt size for a nominal length: the context limit itself becomes limit - 1 - 1."""
    return min(length, limit - 2)


def measure_prefill(engine: Engine, corpus_ids: list[int], lengths: list[int], reps: int = 1,
                    seed: int = 100) -> dict[str, Any]:
    """Per nominal length: median TTFT (ms) and prefill tok/s over `reps` distinct prompts."""
    engine.generate(windows(corpus_ids, [64], seed - 1)[0], 1)  # warm-up
    out: dict[str, Any] = {}
    for i, length in enumerate(lengths):
        n = prompt_tokens_for(length)
        prompts = windows(corpus_ids, [n] * reps, seed + i)
        ttfts = []
        for p in prompts:
            t = engine.generate(p, 1)
            ttfts.append(t.ttft_s)
        ttft = statistics.median(ttfts)
        out[str(length)] = {"prompt_tokens": n, "ttft_ms": 1e3 * ttft, "prefill_tok_s": n / ttft,
                            "reps": reps, "runs_ttft_ms": [round(1e3 * x, 1) for x in ttfts]}
    return out


def main() -> int:
    from single_stream import make_engine

    ap = argparse.ArgumentParser(description="prefill benchmark (one system)")
    ap.add_argument("--system", required=True, choices=["awqserve", "llama.cpp", "transformers"])
    ap.add_argument("--model", default=None, help="awqserve model dir (default: the demo model)")
    ap.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 8192])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    corpus = Tokenizer(demo_gguf()).encode(corpus_text())
    engine = make_engine(args.system, args.model, args.threads)
    print(json.dumps(measure_prefill(engine, corpus, args.lengths, args.reps), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
