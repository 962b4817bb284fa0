"""Faults injected in the engine (issue #16): an exception in a forward, a simulated out-of-memory, a NaN
logits row. Each fails only its own request — a 500/503 envelope naming the cause, or an error event on
a stream — while the requests batched with it complete; the engine keeps serving and
awqserve:request_failures_total{reason} counts each failure. (AWQSERVE_FAULT_INJECT=1 on the stress
server; a prompt holding `__fault_<kind>__` is the faulty one.)"""
from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from _idle import wait_idle
from _server import StressServer
from conftest import scaled
from stress_load import metric_value

FAULTS = {"__fault_exception__": ("internal_error", 500, "injected fault"),
          "__fault_oom__": ("out_of_memory", 503, "out of memory"),
          "__fault_nan__": ("nan_logits", 500, "NaN")}


async def _call(client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[int, str, dict[str, str]]:
    r = await client.post("/v1/completions", json=body)
    return r.status_code, r.text, dict(r.headers)


async def _round(url: str, model: str, normal: int, max_tokens: int) -> list[tuple[int, str, dict[str, str]]]:
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        bodies = [{"model": model, "prompt": f"Story {i}:", "max_tokens": max_tokens, "ignore_eos": True,
                   "stream": i % 2 == 1} for i in range(normal)]
        bodies += [{"model": model, "prompt": f"Please {m} now", "max_tokens": max_tokens, "stream": i == 2}
                   for i, m in enumerate(FAULTS)]
        return list(await asyncio.gather(*(_call(client, b) for b in bodies)))


def _failures(server: StressServer) -> dict[str, float]:
    text = server.metrics_text()
    return {kind: metric_value(text, "awqserve:request_failures_total", reason=kind)
            for kind, _, _ in FAULTS.values()}


def test_injected_faults_fail_only_their_requests(stress_server: StressServer) -> None:
    model = httpx.get(stress_server.base_url + "/v1/models", timeout=10).json()["data"][0]["id"]
    before = _failures(stress_server)
    rounds, normal = int(scaled(1, 5)), 5  # 5 normal + 3 faulty = one batch of 8
    for _ in range(rounds):
        results = asyncio.run(_round(stress_server.base_url, model, normal, int(scaled(16, 64))))
        for status, text, _ in results[:normal]:
            assert status == 200, text
            assert '"error"' not in text, text
        for (status, text, headers), (marker, (kind, want, words)) in zip(results[normal:], FAULTS.items()):
            if marker == "__fault_nan__":  # streamed: 200, then an error event naming the cause, then [DONE]
                events = [ln[6:] for ln in text.splitlines() if ln.startswith("data: ")]
                assert status == 200 and events[-1] == "[DONE]", text
                err = json.loads(events[-2])["error"]
            else:
                assert status == want, text
                err = json.loads(text)["error"]
                assert want != 503 or "retry-after" in headers
            assert err["code"] == kind and words.lower() in err["message"].lower(), err
    after = _failures(stress_server)
    assert {k: after[k] - before[k] for k in after} == {k: float(rounds) for k, _, _ in FAULTS.values()}
    wait_idle(stress_server, timeout=30)
