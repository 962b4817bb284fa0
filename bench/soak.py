"""Soak: a server held at capacity for a while; throughput and memory by thirds (issue #16).

    python bench/soak.py                         # 10 minutes, 8 clients, on its own awqserve (demo model)
    python bench/soak.py --duration 60 --json out.json
    python bench/soak.py --url http://127.0.0.1:8080 --pid 1234 --model-name x   # any running server

`concurrency` closed-loop clients send streamed completions (fixed `max_tokens`, EOS ignored) to
127.0.0.1 for `duration` seconds; the server's RSS (/proc/PID/status) and CPU time (/proc/PID/stat) are
sampled every second. Reported by thirds of the run: output tokens/s (wall), tokens per server CPU
second (insensitive to neighbours stealing the CPU: it falls only if the server does more work per
token), mean RSS; plus errors. Pass: no errors, RSS growth < 10 %, last-third throughput >= 90 % of
the first (per CPU second when the machine is shared).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]


@dataclass
class SoakRecord:
    done: list[tuple[float, float]] = field(default_factory=list)  # (chunk arrival time, tokens credited)
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    samples: list[tuple[float, int, float]] = field(default_factory=list)  # (time, rss bytes, cpu seconds)


def proc_rss_cpu(pid: int) -> tuple[int, float]:
    """(VmRSS bytes, user + system CPU seconds) of a process."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss, cpu


async def _client(c: httpx.AsyncClient, model: str, max_tokens: int, end: float, rec: SoakRecord, i: int) -> None:
    """Closed loop of streamed completions; each token is credited at the time its chunk arrived (the
    usage chunk's count spread over the chunks), so thirds of a short run are measured fairly."""
    k = 0
    while time.monotonic() < end:
        body = {"model": model, "prompt": f"Client {i}, story {k}: once upon a time", "max_tokens": max_tokens,
                "ignore_eos": True, "temperature": 0.7, "seed": k, "stream": True,
                "stream_options": {"include_usage": True}}
        k += 1
        stamps: list[float] = []
        usage: int | None = None
        try:
            async with c.stream("POST", "/v1/completions", json=body) as r:
                if r.status_code != 200:
                    rec.errors.append(f"{r.status_code}: {(await r.aread())[:200]!r}")
                    continue
                async for line in r.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    doc = json.loads(line[6:])
                    if "error" in doc:
                        raise ValueError(f"error event: {doc['error']}")
                    if doc.get("choices"):
                        stamps.append(time.monotonic())
                    if doc.get("usage"):
                        usage = int(doc["usage"]["completion_tokens"])
        except (httpx.HTTPError, ValueError, KeyError) as e:
            rec.errors.append(f"{type(e).__name__}: {e}")
            continue
        per = (usage if usage is not None else len(stamps)) / max(1, len(stamps))
        rec.done.extend((t, per) for t in stamps)
        rec.requests += 1


async def _sampler(pid: int, end: float, rec: SoakRecord) -> None:
    while time.monotonic() < end:
        rss, cpu = proc_rss_cpu(pid)
        rec.samples.append((time.monotonic(), rss, cpu))
        await asyncio.sleep(1.0)


async def soak(url: str, pid: int, model: str, *, duration: float, concurrency: int, max_tokens: int) -> dict[str, Any]:
    """Run the soak against a server at `url` (process `pid`); returns the figures (see module doc)."""
    rec = SoakRecord()
    t0 = time.monotonic()
    end = t0 + duration
    limits = httpx.Limits(max_connections=concurrency + 2)
    async with httpx.AsyncClient(base_url=url, timeout=max(120.0, duration), limits=limits) as c:
        await asyncio.gather(_sampler(pid, end, rec),
                             *(_client(c, model, max_tokens, end, rec, i) for i in range(concurrency)))
    return figures(rec, t0, time.monotonic())


def figures(rec: SoakRecord, t0: float, t1: float) -> dict[str, Any]:
    third = (t1 - t0) / 3
    out: dict[str, Any] = {"duration_s": round(t1 - t0, 1), "requests": rec.requests, "errors": len(rec.errors),
                           "error_examples": rec.errors[:3], "thirds": []}
    for k in range(3):
        a, b = t0 + k * third, t0 + (k + 1) * third
        toks = sum(n for t, n in rec.done if a <= t < b or (k == 2 and t >= b))
        inside = [(rss, cpu) for t, rss, cpu in rec.samples if a <= t < b] or [(0, 0.0)]
        cpu_s = inside[-1][1] - inside[0][1]
        out["thirds"].append({"tok_per_s": round(toks / third, 1), "cpu_s": round(cpu_s, 1),
                              "tok_per_cpu_s": round(toks / cpu_s, 2) if cpu_s > 0 else None,
                              "rss_mb": round(sum(r for r, _ in inside) / len(inside) / 2**20, 1)})
    first, last = out["thirds"][0], out["thirds"][2]
    out["rss_growth"] = round(last["rss_mb"] / first["rss_mb"] - 1, 4) if first["rss_mb"] else None
    out["throughput_ratio"] = round(last["tok_per_s"] / first["tok_per_s"], 3) if first["tok_per_s"] else None
    if first["tok_per_cpu_s"] and last["tok_per_cpu_s"]:
        out["per_cpu_ratio"] = round(last["tok_per_cpu_s"] / first["tok_per_cpu_s"], 3)
    return out


def _own_server(args: argparse.Namespace) -> Any:
    sys.path.insert(0, str(REPO / "tests" / "stress"))
    from _server import StressServer  # the stress tests' launcher: same limits (8 running + 32 queued)

    from awqserve.tools.demo_model import ensure_demo_model

    return StressServer(Path(args.model) if args.model else Path(ensure_demo_model())).wait_ready()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=600.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--url", help="a running server (with --pid); default: start awqserve on the demo model")
    ap.add_argument("--pid", type=int)
    ap.add_argument("--model", help="model directory for the awqserve started here")
    ap.add_argument("--model-name", help="model name to send (default: the first of /v1/models)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    server = None if args.url else _own_server(args)
    url = args.url or server.base_url
    pid = args.pid if args.url else server.proc.pid
    try:
        name = args.model_name or httpx.get(url + "/v1/models", timeout=10).json()["data"][0]["id"]
        result = asyncio.run(soak(url, pid, name, duration=args.duration, concurrency=args.concurrency,
                                  max_tokens=args.max_tokens))
    finally:
        if server is not None:
            server.stop()
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    ok = result["errors"] == 0 and (result["rss_growth"] or 0) < 0.10
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
