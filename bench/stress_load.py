"""Load drivers for the stress scenarios (tests/stress, bench/stress.py): overload, disconnect storm.

Plain OpenAI-compatible HTTP against a base URL on 127.0.0.1, so the same driver measures awqserve and
llama.cpp's llama-server. Every driver is bounded: a fixed request count and a wall-time limit per
request; nothing retries. Outcomes are classified, never just counted: a 200 must be complete (JSON
with choices and usage, or a stream ending in `[DONE]` with the usage chunk when asked), a refusal
must be 429/503 with `Retry-After` and the OpenAI error envelope; anything else is "bad" and kept.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx


@dataclass
class Outcome:
    kind: str  # "ok" | "rejected" | "bad"
    status: int
    seconds: float
    detail: str = ""


@dataclass
class LoadReport:
    outcomes: list[Outcome] = field(default_factory=list)
    samples: list[dict[str, float]] = field(default_factory=list)  # gauges polled during the run
    wall_s: float = 0.0

    def count(self, kind: str) -> int:
        return sum(o.kind == kind for o in self.outcomes)

    def peak(self, key: str) -> float:
        return max((s.get(key, 0.0) for s in self.samples), default=0.0)

    def summary(self) -> dict[str, Any]:
        ok = sorted(o.seconds for o in self.outcomes if o.kind == "ok")
        return {"requests": len(self.outcomes), "ok": len(ok), "rejected": self.count("rejected"),
                "bad": self.count("bad"), "wall_s": round(self.wall_s, 2),
                "ok_p50_s": round(ok[len(ok) // 2], 3) if ok else None,
                "ok_max_s": round(ok[-1], 3) if ok else None,
                "statuses": sorted({o.status for o in self.outcomes}),
                "peak_waiting": self.peak("waiting"), "peak_queue_depth": self.peak("queue_depth"),
                "bad_examples": [o.detail[:300] for o in self.outcomes if o.kind == "bad"][:3]}


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` in Prometheus text whose labels include `labels` (0.0 if none)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, rest = head.partition("{")
        if metric != name or not all(f'{k}="{v}"' in rest for k, v in labels.items()):
            continue
        total += float(value)
    return total


def awqserve_gauges(metrics: httpx.Response, health: httpx.Response) -> dict[str, float]:
    """awqserve's load figures: the vLLM gauges and /health's queue depth."""
    text, body = metrics.text, health.json()
    return {"waiting": metric_value(text, "vllm:num_requests_waiting"),
            "running": metric_value(text, "vllm:num_requests_running"),
            "kv_usage": metric_value(text, "vllm:kv_cache_usage_perc"),
            "queue_depth": float(body.get("queue_depth", 0))}


def request_body(i: int, model: str, max_tokens: int) -> tuple[str, dict[str, Any], bool]:
    """Request i of a mixed workload: chat / completions × stream / not; half the streams ask for usage."""
    chat, stream = i % 2 == 0, (i // 2) % 2 == 0
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "stream": stream, "temperature": 0.0}
    if chat:
        body["messages"] = [{"role": "user", "content": f"Count to ten, request {i}."}]
    else:
        body["prompt"] = f"Request {i}: once upon a time"
    usage = stream and (i // 4) % 2 == 0
    if usage:
        body["stream_options"] = {"include_usage": True}
    return ("/v1/chat/completions" if chat else "/v1/completions"), body, usage


def _refusal(r: httpx.Response, body: bytes) -> str | None:
    """None when `r` is a proper refusal (429/503 + Retry-After + envelope), else what is wrong."""
    if "retry-after" not in r.headers:
        return "no Retry-After"
    try:
        err = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return f"no error envelope: {body[:200]!r}"
    return None if isinstance(err, dict) and err.get("message") else f"bad envelope: {err!r}"


def _check_stream(text: str, want_usage: bool) -> str | None:
    data = [ln[6:] for ln in text.splitlines() if ln.startswith("data: ")]
    if not data or data[-1] != "[DONE]":
        return f"stream did not end with [DONE]: {text[-200:]!r}"
    chunks = [json.loads(d) for d in data[:-1]]
    if any("error" in c for c in chunks):
        return f"error event: {[c for c in chunks if 'error' in c][0]!r}"
    if want_usage and not any(c.get("usage") for c in chunks):
        return "usage asked for but missing"
    return None


async def one_request(client: httpx.AsyncClient, path: str, body: dict[str, Any], want_usage: bool,
                      timeout: float) -> Outcome:
    t0 = time.monotonic()
    try:
        async with client.stream("POST", path, json=body, timeout=timeout) as r:
            raw = await r.aread()
    except (httpx.HTTPError, asyncio.TimeoutError) as e:
        return Outcome("bad", 0, time.monotonic() - t0, f"{type(e).__name__}: {e}")
    dt = time.monotonic() - t0
    if r.status_code in (429, 503):
        problem = _refusal(r, raw)
        return Outcome("rejected" if problem is None else "bad", r.status_code, dt, problem or "")
    if r.status_code != 200:
        return Outcome("bad", r.status_code, dt, raw[:300].decode(errors="replace"))
    if body.get("stream"):
        problem = _check_stream(raw.decode(errors="replace"), want_usage)
    else:
        doc = json.loads(raw)
        problem = None if doc.get("choices") and doc.get("usage") else f"incomplete body: {raw[:200]!r}"
    return Outcome("ok" if problem is None else "bad", 200, dt, problem or "")


async def poll_gauges(base_url: str, read: Callable[[httpx.Response, httpx.Response], dict[str, float]],
                      stop: asyncio.Event, into: list[dict[str, float]], every: float = 0.05) -> None:
    """Sample /metrics and /health until `stop` (`read` turns the two answers into named numbers)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as c:
        while not stop.is_set():
            try:
                into.append(read(await c.get("/metrics"), await c.get("/health")))
            except (httpx.HTTPError, ValueError):
                pass
            try:
                await asyncio.wait_for(stop.wait(), every)
            except asyncio.TimeoutError:
                pass


async def overload(base_url: str, model: str, *, requests: int, max_tokens: int, timeout: float,
                   read_gauges: Callable[[httpx.Response, httpx.Response], dict[str, float]] | None = None
                   ) -> LoadReport:
    """Fire `requests` mixed requests at once (one connection each); wait for every one to end."""
    report, stop = LoadReport(), asyncio.Event()
    limits = httpx.Limits(max_connections=requests + 4, max_keepalive_connections=requests + 4)
    poller = (asyncio.ensure_future(poll_gauges(base_url, read_gauges, stop, report.samples))
              if read_gauges else None)
    t0 = time.monotonic()
    async with httpx.AsyncClient(base_url=base_url, limits=limits) as client:
        jobs = [one_request(client, *request_body(i, model, max_tokens), timeout=timeout) for i in range(requests)]
        report.outcomes = list(await asyncio.gather(*jobs))
    report.wall_s = time.monotonic() - t0
    stop.set()
    if poller is not None:
        await poller
    return report


async def disconnect_storm(base_url: str, model: str, *, streams: int, max_tokens: int) -> dict[str, int]:
    """`streams` streamed completions dropped by the client: even ones as soon as the 200 arrives
    (before the first chunk: still queued or prefilling), odd ones after their first data chunk."""
    dropped = {"before_first_chunk": 0, "after_first_chunk": 0, "refused": 0, "failed": 0}

    async def one(i: int) -> None:
        path, body, _ = request_body(i * 4 + 1, model, max_tokens)  # a streamed completion
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as c:
            async with c.stream("POST", path, json=body) as r:
                if r.status_code != 200:
                    dropped["refused"] += 1
                    return
                if i % 2 == 0:
                    dropped["before_first_chunk"] += 1
                    return  # closes the connection with only the headers read
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        dropped["after_first_chunk"] += 1
                        return

    results = await asyncio.gather(*(one(i) for i in range(streams)), return_exceptions=True)
    dropped["failed"] = sum(isinstance(x, BaseException) for x in results)
    return dropped
