"""Where a serving level's time goes, in-process: the sweep's closed loop on the engine, steps by kind.

Keeps `--concurrency` requests in flight (the serving sweep's prompts: 128–512 tokens from
bench/loadgen.py, seeded the same way, 128 output tokens, greedy, EOS ignored), refilling as requests
finish, and times every `ModelRunner.execute` by what the step carried: prefill only, decode only,
or mixed. No HTTP: compare it with the sweep's row to see the serving layer's share.

    python bench/profile_serving_steps.py --concurrency 16 --requests 48
"""
from __future__ import annotations

import argparse
import collections
import time
from typing import Any

import loadgen
import peers

from awqserve.config.engine_config import EngineConfig
from awqserve.engine.batch import SchedulerOutput
from awqserve.engine.engine_factory import build_engine
from awqserve.engine.sampling_params import SamplingParams


def step_kind(sched: SchedulerOutput) -> tuple[str, int, int]:
    """("prefill" | "decode" | "mixed", prefill tokens, decode rows) of a scheduled step."""
    pre = dec = 0
    for r, n in zip(sched.requests, sched.num_scheduled_tokens):
        if r.num_computed_tokens < r.num_prompt_tokens:
            pre += n
        else:
            dec += 1
    return ("mixed" if pre and dec else "prefill" if pre else "decode"), pre, dec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--requests", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-num-batched-tokens", type=int, default=None)
    args = ap.parse_args()
    extra: dict[str, Any] = {}
    if args.max_num_batched_tokens:
        extra["max_num_batched_tokens"] = args.max_num_batched_tokens
    eng = build_engine(EngineConfig(num_threads=args.threads, max_num_seqs=max(32, args.concurrency), **extra))
    corpus = peers.Tokenizer(peers.demo_gguf()).encode(loadgen.corpus_text())
    reqs = loadgen.serving_requests(corpus, args.requests, seed=1000 + args.concurrency, max_tokens=128)
    params = SamplingParams(temperature=0, max_tokens=128, ignore_eos=True)
    stats: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0, 0])
    execute = eng.runner.execute

    def timed(sched: SchedulerOutput) -> Any:
        t0 = time.perf_counter()
        out = execute(sched)
        kind, pre, dec = step_kind(sched)
        row = stats[kind]
        row[0] += 1
        row[1] += time.perf_counter() - t0
        row[2] += pre
        row[3] += dec
        return out

    eng.runner.execute = timed  # type: ignore[method-assign]
    nxt = live = done = produced = 0
    t0 = time.perf_counter()
    while done < args.requests:
        while live < args.concurrency and nxt < args.requests:
            eng.add_request(f"r{nxt}", reqs[nxt][0], params)
            nxt, live = nxt + 1, live + 1
        for o in eng.step():
            if o.finished:
                live, done, produced = live - 1, done + 1, produced + len(o.outputs[0].token_ids)
    wall = time.perf_counter() - t0
    print(f"concurrency {args.concurrency}: {args.requests} requests in {wall:.1f} s, {produced / wall:.1f} output tok/s")
    for kind, (n, s, pre, dec) in sorted(stats.items()):
        print(f"  {kind:8s} {int(n):5d} steps  {s:6.1f} s  {1e3 * s / max(n, 1):8.1f} ms/step  "
              f"prefill tokens {int(pre):6d}  decode rows {int(dec):6d}")


if __name__ == "__main__":
    main()
