"""Replicas on Ray Serve: aggregate throughput of 1 vs 2 replicas at 16 streams, the proxy's added
latency, and the prefix-hit rate, all in one run on one machine → docs/benchmarks/ray-<date>.md.

    .venv/bin/python bench/ray_replicas.py [--model DIR] [--requests 32] [--max-tokens 64]

Phases (same engine flags everywhere: eager, 1 torch thread per engine):
1. direct: the single-process `awqserve serve` (no Ray): request latency of GET /v1/models and of a
   1-token completion, and 16-stream throughput, for reference;
2. Ray, 1 replica: the same latencies through Ray Serve's proxy + ingress (the difference is the
   proxy's cost per request), and 16-stream throughput;
3. Ray, 2 replicas: 16-stream throughput; phases 2 and 3 alternate for `--rounds` rounds; the last
   2-replica round adds a shared-prefix workload (4 system prompts x 8 questions) for the router's
   prefix-hit rate.
The Ray cluster is private to this process (loopback, no dashboard) and ends with it.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
os.environ.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
                   "RAY_AUTH_MODE": "disabled"})  # before Ray is imported: a loopback-only cluster

from loadgen import corpus_text, run_level, serving_requests  # noqa: E402
from peers import cpu_busy, free_port, hardware  # noqa: E402

ENGINE_FLAGS = ["--enforce-eager", "--num-threads", "1", "--max-model-len", "1024", "--kv-cache-memory", "256MiB",
                "--max-num-seqs", "16", "--disable-log-requests", "--log-level", "warning"]
SYSTEMS = [f"You are assistant number {i}. " + "Answer questions about rivers, cities and history carefully. " * 3
           for i in range(4)]


def latencies(url: str, n: int) -> dict[str, float]:
    """Median and p90 (ms) of sequential GET /v1/models and 1-token completions."""
    out: dict[str, float] = {}
    with httpx.Client(base_url=url, timeout=120) as c:
        for name, call in (("models", lambda: c.get("/v1/models")),
                           ("one_token", lambda: c.post("/v1/completions", json={
                               "prompt": "Hello", "max_tokens": 1, "temperature": 0}))):
            call()  # warm
            ts = []
            for _ in range(n):
                t0 = time.perf_counter()
                assert call().status_code == 200
                ts.append(1e3 * (time.perf_counter() - t0))
            ts.sort()
            out[f"{name}_p50_ms"], out[f"{name}_p90_ms"] = statistics.median(ts), ts[int(0.9 * (n - 1))]
    return out


def throughput(url: str, requests: list[tuple[list[int], int]]) -> dict[str, Any]:
    return asyncio.run(run_level(url, requests, 16, budget_s=900))


def shared_prefix(url: str) -> dict[str, Any]:
    """4 system prompts x 8 questions, 8 in flight; routing counters and engine prefix-cache hits."""
    async def one(c: httpx.AsyncClient, i: int) -> str:
        body = {"messages": [{"role": "system", "content": SYSTEMS[i % 4]},
                             {"role": "user", "content": f"Question {i}: name a river."}], "max_tokens": 8}
        r = await c.post("/v1/chat/completions", json=body)
        return r.headers.get("x-awqserve-replica", "?")

    async def main() -> list[str]:
        async with httpx.AsyncClient(base_url=url, timeout=300) as c:
            sem = asyncio.Semaphore(8)

            async def limited(i: int) -> str:
                async with sem:
                    return await one(c, i)
            return await asyncio.gather(*(limited(i) for i in range(32)))

    before = httpx.get(url + "/awqserve/routing").json()
    replicas = asyncio.run(main())
    after = httpx.get(url + "/awqserve/routing").json()
    delta = {k: after[k] - before[k] for k in ("routed", "known_prefix", "prefix_hits", "fallbacks")}
    delta["prefix_hit_rate"] = delta["prefix_hits"] / delta["known_prefix"] if delta["known_prefix"] else 0.0
    per_system = [sorted({replicas[i] for i in range(32) if i % 4 == s}) for s in range(4)]
    return {"routing": delta, "replicas_per_system_prompt": per_system}


def direct_phase(model: str, requests: list[tuple[list[int], int]], n_lat: int) -> dict[str, Any]:
    port = free_port()
    argv = [sys.executable, "-m", "awqserve", "serve", model, "--port", str(port), *ENGINE_FLAGS]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url, proc)
        return {**latencies(url, n_lat), "tok_s_16": throughput(url, requests)}
    finally:
        proc.terminate()
        proc.wait(60)


def _wait(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("server exited")
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(url)


def ray_phases(model: str, requests: list[tuple[list[int], int]], n_lat: int, rounds: int) -> dict[str, Any]:
    import ray
    from ray import serve

    from awqserve.cli.serve import add_arguments, build_configs
    from awqserve.ray.application import build_application
    from awqserve.ray.config import ray_config_from_args

    port = free_port()
    ray.init(address="local", _node_ip_address="127.0.0.1", num_cpus=4, include_dashboard=False,
             object_store_memory=200 << 20, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url, out = f"http://127.0.0.1:{port}", {"replicas_1": {"rounds": []}, "replicas_2": {"rounds": []}}
    try:
        # 1, 2, 1, 2, …: load from other users of the machine drifts; interleaving spreads it over both
        for r, n in [(r, n) for r in range(rounds) for n in (1, 2)]:
            parser = argparse.ArgumentParser()
            add_arguments(parser)
            ns = parser.parse_args([model, "--ray", "--replicas", str(n), *ENGINE_FLAGS])
            server, engine = build_configs(ns)
            serve.run(build_application(server, engine, ray_config_from_args(ns, engine)), name="awqserve",
                      route_prefix="/")
            _wait(url)
            phase = out[f"replicas_{n}"]
            if n == 1 and r == 0:
                phase.update(latencies(url, n_lat))
            phase["rounds"].append(throughput(url, requests))
            if n == 2 and r == rounds - 1:
                phase["shared_prefix"] = shared_prefix(url)
            serve.delete("awqserve")
    finally:
        serve.shutdown()
        ray.shutdown()
    return out


def report(res: dict[str, Any], args: argparse.Namespace) -> str:
    d, r1, r2 = res["direct"], res["ray"]["replicas_1"], res["ray"]["replicas_2"]
    t = lambda p: statistics.mean(x["output_tok_s"] for x in p["rounds"])  # noqa: E731
    sp = r2["shared_prefix"]
    lines = [
        f"# Ray Serve replicas — {res['date']}", "",
        f"`bench/ray_replicas.py --requests {args.requests} --max-tokens {args.max_tokens} --rounds {args.rounds}` on "
        f"{res['hardware'].get('cpu_model')} ({res['hardware'].get('cpus')} CPUs); CPU busy before the run: "
        f"{res['cpu_busy_before']:.0%} (the machine is shared: treat differences under ~15% as noise).",
        "Demo model, eager, 1 torch thread per engine, closed loop of 16 streams, prompts of 128–512 tokens "
        f"(token ids, no shared prefix), {args.max_tokens} output tokens each.", "",
        "| setup | output tok/s @16 streams | TTFT p50 ms | ITL p50 ms | errors |", "|---|---|---|---|---|",
    ]
    rows = [("single process (no Ray)", d["tok_s_16"])]
    rows += [(f"Ray Serve, {n} replica{'s' if n > 1 else ''} (round {i + 1})", x)
             for i in range(args.rounds) for n, x in ((1, r1["rounds"][i]), (2, r2["rounds"][i]))]
    for name, s in rows:
        lines.append(f"| {name} | {s['output_tok_s']:.1f} | {s['ttft_p50_ms']:.0f} | {s['itl_p50_ms']:.1f} | "
                     f"{s['errors']} |")
    lines += ["", f"Mean over rounds: 1 replica {t(r1):.1f} tok/s, 2 replicas {t(r2):.1f} tok/s: "
              f"**×{t(r2) / t(r1):.2f}** aggregate throughput.", "",
              "Proxy cost per request (sequential, 1 replica vs the single process; p50 / p90 ms):", "",
              "| request | direct | through Ray | added |", "|---|---|---|---|"]
    for key, label in (("models", "GET /v1/models"), ("one_token", "1-token completion")):
        lines.append(f"| {label} | {d[key + '_p50_ms']:.1f} / {d[key + '_p90_ms']:.1f} | "
                     f"{r1[key + '_p50_ms']:.1f} / {r1[key + '_p90_ms']:.1f} | "
                     f"{r1[key + '_p50_ms'] - d[key + '_p50_ms']:+.1f} (p50) |")
    lines += ["", "Prefix routing, 2 replicas: 4 system prompts × 8 questions, 8 in flight: "
              f"prefix-hit rate **{sp['routing']['prefix_hit_rate']:.0%}** "
              f"({sp['routing']['prefix_hits']}/{sp['routing']['known_prefix']} requests whose prefix a replica "
              f"held went to it; {sp['routing']['fallbacks']} fell back to the least loaded); replicas per "
              f"system prompt: {[len(x) for x in sp['replicas_per_system_prompt']]}.", "",
              "Reading: each engine runs 1 torch thread, so 2 replicas can double throughput only with 2 idle "
              "cores; on a shared 2-CPU machine the gain is bounded by what the other processes leave. The "
              "proxy's cost is the GET /v1/models difference (no engine work): one hop through Ray's proxy, "
              "the ingress and a streaming handle call.", "",
              "Raw results: the JSON file next to this one."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model directory (default: the demo model)")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--latency-samples", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved 1-replica / 2-replica rounds")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    args = ap.parse_args()
    from awqserve.tools.demo_model import ensure_demo_model
    from transformers import AutoTokenizer

    model = args.model or str(ensure_demo_model())
    tok = AutoTokenizer.from_pretrained(model, local_files_only=True)
    corpus = tok(corpus_text())["input_ids"]
    requests = serving_requests(corpus, args.requests, max_tokens=args.max_tokens)
    res: dict[str, Any] = {"date": dt.date.today().isoformat(), "hardware": hardware(), "cpu_busy_before": cpu_busy()}
    res["direct"] = direct_phase(model, requests, args.latency_samples)
    res["ray"] = ray_phases(model, requests, args.latency_samples, args.rounds)
    out = Path(args.out)
    (out / f"ray-{res['date']}.json").write_text(json.dumps(res, indent=1, default=str))
    (out / f"ray-{res['date']}.md").write_text(report(res, args))
    print(report(res, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
