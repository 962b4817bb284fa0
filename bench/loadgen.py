"""The one HTTP load generator used for every server (awqserve serve, llama-server).

Closed loop: `concurrency` workers each stream one request at a time from a shared list until it is
empty. Requests are streaming `/v1/completions` with the prompt sent as token ids (exact lengths on
every server), `max_tokens` output with `ignore_eos: true` (a top-level body field: llama-server's own
parameter, and vLLM's extra parameter that awqserve accepts), greedy. Prompts are windows of a fixed
seeded text at random offsets, so no two requests share a prefix and no server gains from its prefix
cache. Per request it records TTFT (send → first token chunk) and the gaps between token chunks (ITL).

    python bench/loadgen.py --url http://127.0.0.1:8000 --concurrency 1 4 16 --num-requests 32
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

_WORDS = ("the of and to in is was for on that with as by at from his her it an were are which this be or "
          "has had not but first one their its new after who they have two been other all time year city "
          "during school also more most world river between team under many later would game state film war "
          "only through three season album known built music while used series part north early life since "
          "where east west south both about near village served national because called made long house "
          "station church into over family general water small large light people history number within "
          "according public following record before based several island high among each major second area "
          "around line until members became road same game final common county center line").split()


def corpus_text(n_words: int = 16000, seed: int = 0) -> str:
    """A fixed, seeded pseudo-English text (≈ 1.2 tokens per word) the prompts are cut from."""
    rng = random.Random(seed)
    sentences, words = [], 0
    while words < n_words:
        k = rng.randint(6, 18)
        s = " ".join(rng.choice(_WORDS) for _ in range(k))
        sentences.append(s[0].upper() + s[1:] + rng.choice([".", ".", ".", ",", ";", "?"]))
        words += k
    return " ".join(sentences)


def windows(corpus_ids: list[int], lengths: list[int], seed: int) -> list[list[int]]:
    """One prompt per length: a window of the corpus at a seeded random offset."""
    rng = random.Random(seed)
    out = []
    for n in lengths:
        if n > len(corpus_ids):
            raise ValueError(f"prompt of {n} tokens longer than the corpus ({len(corpus_ids)})")
        off = rng.randint(0, len(corpus_ids) - n)
        out.append(corpus_ids[off: off + n])
    return out


def serving_requests(corpus_ids: list[int], n: int, seed: int = 0, lo: int = 128, hi: int = 512,
                     max_tokens: int = 128) -> list[tuple[list[int], int]]:
    """The serving sweep: `n` prompts of lo..hi tokens (seeded), `max_tokens` output each."""
    rng = random.Random(seed)
    lengths = [rng.randint(lo, hi) for _ in range(n)]
    return [(p, max_tokens) for p in windows(corpus_ids, lengths, seed + 1)]


def offline_requests(corpus_ids: list[int], n: int, seed: int = 0, in_range: tuple[int, int] = (64, 256),
                     out_range: tuple[int, int] = (64, 256)) -> list[tuple[list[int], int]]:
    """nano-vllm's throughput workload scaled to the box: random input and output lengths (seeded)."""
    rng = random.Random(seed)
    ins = [rng.randint(*in_range) for _ in range(n)]
    outs = [rng.randint(*out_range) for _ in range(n)]
    return list(zip(windows(corpus_ids, ins, seed + 1), outs))


# ---------------------------------------------------------------- one request

@dataclass
class Result:
    """One streamed request, filled in as chunks arrive (a cancelled request keeps what it got).

    `error` is None on success; `n_out` is the server's usage count when it reports one, else the
    number of chunks that carried text.
    """

    prompt_len: int
    t0: float = field(default_factory=time.perf_counter)
    stamps: list[float] = field(default_factory=list)
    end: float = math.nan
    usage_out: int | None = None
    error: str | None = None

    @property
    def n_out(self) -> int:
        return self.usage_out if self.usage_out else len(self.stamps)

    @property
    def ttft_s(self) -> float:
        return self.stamps[0] - self.t0 if self.stamps else math.nan

    @property
    def gaps_s(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:])]

    @property
    def decode_tok_s(self) -> float:
        decode = self.stamps[-1] - self.stamps[0] if len(self.stamps) > 1 else 0.0
        return (self.n_out - 1) / decode if self.n_out > 1 and decode > 0 else math.nan


def _chunk_text(chunk: dict[str, Any]) -> str:
    parts = []
    for c in chunk.get("choices") or []:
        parts.append(c.get("text") or (c.get("delta") or {}).get("content") or "")
    return "".join(parts)


async def stream(client: httpx.AsyncClient, url: str, body: dict[str, Any], res: Result,
                 expect: int | None = None) -> Result:
    """POST a streaming request; stamp every chunk that carries generated text into `res`."""
    res.t0 = time.perf_counter()
    try:
        async with client.stream("POST", url, json=body) as r:
            if r.status_code != 200:
                res.error = f"HTTP {r.status_code}: {(await r.aread()).decode(errors='replace')[:200]}"
                return res
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    res.error = f"stream error: {str(chunk['error'])[:200]}"
                    break
                if chunk.get("usage"):
                    res.usage_out = chunk["usage"].get("completion_tokens")
                if _chunk_text(chunk):
                    res.stamps.append(time.perf_counter())
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        res.error = f"{type(e).__name__}: {e}"[:200]
    except asyncio.CancelledError:
        res.error = "cancelled: level time budget spent"
        raise
    finally:
        res.end = time.perf_counter()
    if res.error is None and expect is not None and res.n_out < expect:
        res.error = f"short output: {res.n_out}/{expect} tokens"
    return res


def completion_body(model: str | None, prompt_ids: list[int], max_tokens: int) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": prompt_ids, "max_tokens": max_tokens, "temperature": 0.0, "stream": True,
                            "ignore_eos": True, "stream_options": {"include_usage": True}}
    if model:
        body["model"] = model
    return body


def chat_body(model: str | None, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
    body = completion_body(model, [], max_tokens)
    del body["prompt"]
    body["messages"] = messages
    return body


async def served_model(client: httpx.AsyncClient, base_url: str) -> str | None:
    try:
        r = await client.get(base_url + "/v1/models")
        return r.json()["data"][0]["id"]
    except (httpx.HTTPError, KeyError, IndexError, ValueError):
        return None


# ---------------------------------------------------------------- a load level

def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100); nan for no values."""
    v = sorted(x for x in values if not math.isnan(x))
    if not v:
        return math.nan
    pos = (len(v) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def summarize(results: list[Result], wall_s: float, concurrency: int) -> dict[str, Any]:
    ok = [r for r in results if r.error is None]
    gaps = [g for r in ok for g in r.gaps_s]
    out_tokens = sum(r.n_out for r in results)
    return {
        "concurrency": concurrency, "requests": len(results), "errors": len(results) - len(ok),
        "error_samples": sorted({r.error for r in results if r.error})[:3],
        "wall_s": wall_s, "input_tokens": sum(r.prompt_len for r in results), "output_tokens": out_tokens,
        "output_tok_s": out_tokens / wall_s if wall_s > 0 else math.nan,
        "ttft_p50_ms": 1e3 * percentile([r.ttft_s for r in ok], 50),
        "ttft_p99_ms": 1e3 * percentile([r.ttft_s for r in ok], 99),
        "itl_p50_ms": 1e3 * percentile(gaps, 50), "itl_p99_ms": 1e3 * percentile(gaps, 99),
        "per_stream_tok_s": percentile([r.decode_tok_s for r in ok], 50),
    }


async def run_level(base_url: str, requests: list[tuple[list[int], int]], concurrency: int,
                    budget_s: float = 900.0) -> dict[str, Any]:
    """Run `requests` with `concurrency` in flight; returns `summarize(...)` plus the model name used.

    After `budget_s` the level stops: requests in flight are cancelled (and count as errors, with the
    tokens they had streamed), requests not yet sent are dropped, and "budget_spent" is set.
    """
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(budget_s + 60), limits=limits) as client:
        model = await served_model(client, base_url)
        url = base_url + "/v1/completions"
        queue = list(reversed(requests))
        results: list[Result] = []

        async def worker() -> None:
            while queue:
                prompt, max_tokens = queue.pop()
                results.append(Result(len(prompt)))
                await stream(client, url, completion_body(model, prompt, max_tokens), results[-1], expect=max_tokens)

        t0 = time.perf_counter()
        spent = False
        try:
            await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout=budget_s)
        except asyncio.TimeoutError:
            spent = True
        summary = summarize(results, time.perf_counter() - t0, concurrency)
        summary.update(model=model, budget_spent=spent, not_sent=len(queue))
        return summary


async def warm_up(base_url: str, prompt_ids: list[int], max_tokens: int = 8) -> None:
    """One short request so the first measured request does not pay for lazy initialisation."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(300.0)) as client:
        model = await served_model(client, base_url)
        await stream(client, base_url + "/v1/completions", completion_body(model, prompt_ids, max_tokens),
                     Result(len(prompt_ids)))


async def chat_single(base_url: str, messages: list[dict[str, str]], max_tokens: int,
                      budget_s: float = 600.0) -> Result:
    """Single stream over HTTP through the server's own chat template (cancelled after `budget_s`)."""
    res = Result(0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(budget_s + 60)) as client:
        model = await served_model(client, base_url)
        body = chat_body(model, messages, max_tokens)
        try:
            await asyncio.wait_for(stream(client, base_url + "/v1/chat/completions", body, res, max_tokens), budget_s)
        except asyncio.TimeoutError:
            pass
    return res


async def prefill_single(base_url: str, prompt_ids: list[int], budget_s: float = 600.0) -> Result:
    """Time to the first token of a fresh prompt over HTTP (streamed completion, one output token)."""
    res = Result(len(prompt_ids))
    async with httpx.AsyncClient(timeout=httpx.Timeout(budget_s + 60)) as client:
        model = await served_model(client, base_url)
        try:
            await asyncio.wait_for(stream(client, base_url + "/v1/completions", completion_body(model, prompt_ids, 1),
                                         res), budget_s)
        except asyncio.TimeoutError:
            res.error = "timed out"
    if not res.stamps and res.error is None:  # a first token without text: the response's end is the bound
        res.stamps.append(res.end)
    return res


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from peers import Tokenizer, demo_gguf

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 32])
    ap.add_argument("--num-requests", type=int, default=0, help="per level; 0 = max(8, 3 x concurrency)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    corpus = Tokenizer(demo_gguf()).encode(corpus_text())
    asyncio.run(warm_up(args.url, corpus[:32]))
    for c in args.concurrency:
        n = args.num_requests or max(8, 3 * c)
        reqs = serving_requests(corpus, n, seed=args.seed + c, max_tokens=args.max_tokens)
        print(json.dumps(asyncio.run(run_level(args.url, reqs, c))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
