"""`awqserve serve --ray --replicas 2` on a local Ray cluster (127.0.0.1): one endpoint, two engines.

Two replicas of the demo model (eager, 1 thread each) behind Ray Serve's proxy: streams spread over
both, the openai SDK unchanged, auth and error envelopes through the proxy, a flood past capacity
gets 503 + Retry-After, shared prefixes stick to one replica, metrics carry a `replica` label, and a
replica killed mid-load ends its streams with an error event while Ray brings it back.
The kill test runs last: it changes the replica set.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any, Iterator

import httpx
import pytest

from _ray_cluster import RAY_ENV, RayCluster

os.environ.update(RAY_ENV)  # before Ray is imported: it reads these once, at import
pytest.importorskip("ray.serve", reason="needs the ray extra: pip install 'awqserve[ray]'")

from conftest import free_port  # noqa: E402

KEY = "ray-e2e-key"
AUTH = {"authorization": f"Bearer {KEY}"}
# capacity: 2 x (8 running + 16 queued) in the replicas + 16 waiting in the ingress. Generous queues:
# a replica counts a burst's requests as queued until its scheduler runs them, and Ray counts
# requests being routed as waiting, so a burst of 16 must fit in both.
SEQS, QUEUED, RAY_QUEUED = 8, 16, 16
FLOOD = 100  # 36 more than fit
LONG_A = "You are a meticulous geography tutor. " * 6  # > 2 routing chunks of 64 characters
LONG_B = "You are a terse assistant for questions about cooking and kitchen chemistry. " * 4

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(model_dir: Any) -> Iterator[RayCluster]:
    c = RayCluster()
    try:
        c.start_head()
        c.metrics_port = free_port()
        c.start_awqserve(model_dir, [
            "--replicas", "2", "--num-threads", "1", "--max-num-seqs", str(SEQS),
            "--max-num-queued-reqs", str(QUEUED), "--ray-max-queued-requests", str(RAY_QUEUED),
            "--max-model-len", "512", "--kv-cache-memory", "128MiB", "--api-key", KEY,
            "--replica-metrics-port", str(c.metrics_port), "--disable-log-requests", "--log-level", "warning"])
        c.wait_replicas(2, timeout=180)  # /health answers as soon as the first replica is up
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def url(cluster: RayCluster) -> str:
    assert cluster.server is not None
    return cluster.server.url


def _chat(content: str, max_tokens: int, system: str | None = None, stream: bool = False) -> dict[str, Any]:
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
    body: dict[str, Any] = {"messages": msgs, "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


async def _stream(client: httpx.AsyncClient, body: dict[str, Any],
                  started: dict[str, int] | None = None, event: asyncio.Event | None = None) -> tuple[str, list[str]]:
    """(replica, SSE payloads); once the first event arrived, counts the replica in `started` and
    sets `event`."""
    async with client.stream("POST", "/v1/chat/completions", json=body, headers=AUTH) as r:
        assert r.status_code == 200, await r.aread()
        replica, lines = r.headers["x-awqserve-replica"], []
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                lines.append(line[6:])
                if event is not None and not event.is_set():
                    started[replica] = started.get(replica, 0) + 1  # type: ignore[index]
                    event.set()
        return replica, lines


def test_sixteen_streams_complete_over_both_replicas(url: str) -> None:
    async def main() -> list[tuple[str, list[str]]]:
        async with httpx.AsyncClient(base_url=url, timeout=180) as client:
            return await asyncio.gather(*(_stream(client, _chat(f"Count to {i}.", 16, stream=True))
                                          for i in range(16)))

    t0 = time.monotonic()
    results = asyncio.run(main())
    assert time.monotonic() - t0 < 180
    prompt_tokens = httpx.post(url + "/tokenize", headers=AUTH, json={"messages": _chat("Count to 3.", 1)["messages"]})
    for i, (_, lines) in enumerate(results):
        assert lines[-1] == "[DONE]"
        usage = json.loads(lines[-2])["usage"]
        assert usage["completion_tokens"] == 16 and usage["total_tokens"] == usage["prompt_tokens"] + 16
        if i == 3:
            assert usage["prompt_tokens"] == prompt_tokens.json()["count"]
    replicas = {replica for replica, _ in results}
    assert len(replicas) == 2, f"all 16 streams went to {replicas}"


def test_openai_sdk_unchanged(url: str) -> None:
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=120)
    model = client.models.list().data[0].id  # the model directory given, as the single-process server names it
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=12)
    assert raw.headers["x-awqserve-replica"]
    assert raw.parse().choices[0].message.content
    chunks = list(client.completions.create(model=model, prompt="The capital of France is", max_tokens=8,
                                            stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}], max_tokens=1)
    assert nf.value.code == "model_not_found"
    bad = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as auth:
        bad.models.list()
    assert auth.value.code == "invalid_api_key"


def test_flood_past_capacity_gets_503_with_retry_after(url: str) -> None:
    async def one(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.post("/v1/chat/completions", json=_chat(f"Say {i}.", 8), headers=AUTH)

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=120,
                                     limits=httpx.Limits(max_connections=100)) as client:
            return await asyncio.gather(*(one(client, i) for i in range(FLOOD)))

    responses = asyncio.run(main())
    refused = [r for r in responses if r.status_code == 503]
    served = [r for r in responses if r.status_code == 200]
    assert len(refused) + len(served) == FLOOD, sorted({r.status_code for r in responses})
    assert refused and len(served) >= 2 * SEQS
    for r in refused:
        assert int(r.headers["retry-after"]) >= 1
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}
        assert err["code"] in ("replicas_busy", "queue_full")
    assert all(r.json()["usage"]["completion_tokens"] == 8 for r in served)


def test_shared_prefix_sticks_to_one_replica(url: str) -> None:
    with httpx.Client(base_url=url, timeout=120, headers=AUTH) as http:
        def replica(system: str, question: str) -> str:
            r = http.post("/v1/chat/completions", json=_chat(question, 2, system=system))
            assert r.status_code == 200, r.text
            return r.headers["x-awqserve-replica"]

        a = {replica(LONG_A, f"What is the capital of country number {i}?") for i in range(6)}
        b = {replica(LONG_B, f"How long do I boil egg number {i}?") for i in range(4)}
        stats = http.get("/awqserve/routing").json()
    assert len(a) == 1 and len(b) == 1, (a, b)
    assert stats["prefix_hits"] >= 8 and stats["prefix_hit_rate"] > 0.5, stats


def test_metrics_per_replica_with_replica_label(cluster: RayCluster, url: str) -> None:
    text = httpx.get(url + "/metrics", timeout=30).text
    assert 'replica="' in text and "vllm:num_requests_running" in text
    labels = set()
    for rank in (0, 1):
        body = httpx.get(f"http://127.0.0.1:{cluster.metrics_port + rank}/metrics", timeout=30).text
        found = {line.split('replica="')[1].split('"')[0] for line in body.splitlines()
                 if line.startswith("vllm:generation_tokens_total")}
        assert len(found) == 1
        labels |= found
    assert len(labels) == 2


def _in_flight(cluster: RayCluster) -> float:
    """Generating requests summed over both replicas' own metrics ports."""
    total = 0.0
    for rank in (0, 1):
        body = httpx.get(f"http://127.0.0.1:{cluster.metrics_port + rank}/metrics", timeout=30).text
        total += sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                     if line.startswith("awqserve:in_flight_requests"))
    return total


def test_client_disconnect_aborts_on_the_replica(cluster: RayCluster, url: str) -> None:
    body = _chat("Tell me a long story.", 400, stream=True)
    with httpx.Client(base_url=url, timeout=60) as c, \
            c.stream("POST", "/v1/chat/completions", json=body, headers=AUTH) as r:
        lines = r.iter_lines()
        for _ in range(3):
            next(lines)  # tokens are flowing
        assert _in_flight(cluster) >= 1
    deadline = time.monotonic() + 20
    while _in_flight(cluster) != 0:  # the proxy's cancel reached the replica's app, which aborted
        assert time.monotonic() < deadline, "the abandoned stream is still generating"
        time.sleep(0.2)


def test_killed_replica_fails_its_streams_and_comes_back(cluster: RayCluster, url: str) -> None:
    import ray

    async def main() -> tuple[str, list[tuple[str, list[str]]], list[int]]:
        async with httpx.AsyncClient(base_url=url, timeout=180) as client:
            events, seen = [asyncio.Event() for _ in range(8)], {}  # type: ignore[var-annotated]
            tasks = [asyncio.create_task(_stream(client, _chat(f"Tell story {i}.", 160, stream=True), seen,
                                                 events[i])) for i in range(8)]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 120)
            victim = max(seen, key=lambda rid: seen[rid])
            await asyncio.to_thread(ray.kill, cluster.replica_actor(victim), no_restart=True)
            after = await asyncio.gather(*(_retry_once(client, _chat(f"After {i}.", 4)) for i in range(4)))
            results = await asyncio.wait_for(asyncio.gather(*tasks), 150)  # never hang
            return victim, results, after

    victim, results, after = asyncio.run(main())
    for replica, lines in results:
        assert lines[-1] == "[DONE]"
        if replica == victim:
            assert "error" in json.loads(lines[-2]), lines[-3:]
        else:
            assert json.loads(lines[-2])["usage"]["completion_tokens"] == 160
    assert any(r == victim for r, _ in results)
    assert after == [200] * 4
    cluster.wait_replicas(2, timeout=240)
    _new_replica_serves(url, old={r for r, _ in results})


async def _retry_once(client: httpx.AsyncClient, body: dict[str, Any]) -> int:
    """A client honouring Retry-After once (a request may race Ray noticing the death)."""
    r = await client.post("/v1/chat/completions", json=body, headers=AUTH)
    if r.status_code == 503:
        await asyncio.sleep(float(r.headers.get("retry-after", "1")))
        r = await client.post("/v1/chat/completions", json=body, headers=AUTH)
    return r.status_code


def _new_replica_serves(url: str, old: set[str]) -> None:
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=url, timeout=60, headers=AUTH) as http:
        while time.monotonic() < deadline:
            r = http.post("/v1/chat/completions", json=_chat("Hello again.", 2))
            if r.status_code == 200 and r.headers["x-awqserve-replica"] not in old:
                return
    raise AssertionError("the replacement replica never served a request")
