"""PrefixAwareRouter's policy on Ray Serve's request-router API, without a cluster: fake replicas,
queue lengths fed into the router's cache, and the callbacks Ray would make."""
from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip("ray.serve", reason="needs the ray extra: pip install 'awqserve[ray]'")

from ray.serve._private.common import DeploymentHandleSource, DeploymentID, RequestMetadata  # noqa: E402
from ray.serve.request_router import PendingRequest, ReplicaID  # noqa: E402

from awqserve.ray.relay import ProxiedRequest  # noqa: E402
from awqserve.ray.router import PrefixAwareRouter, routing_stats  # noqa: E402

DEP = DeploymentID(name="AwqEngine", app_name="awqserve")
SYSTEM = "You are a careful assistant. " * 8  # several 16-character chunks


@pytest.fixture(autouse=True)
def _loop() -> Any:
    """Ray's PendingRequest and router want a current event loop (as in Ray's own router thread)."""
    global LOOP
    LOOP = asyncio.new_event_loop()
    asyncio.set_event_loop(LOOP)
    yield LOOP
    asyncio.set_event_loop(None)
    LOOP.close()


LOOP: asyncio.AbstractEventLoop


@dataclass
class FakeReplica:
    replica_id: ReplicaID
    max_ongoing_requests: int = 12


def _replicas(*names: str) -> list[Any]:
    return [FakeReplica(ReplicaID(unique_id=n, deployment_id=DEP)) for n in names]


def _pending(prefix: str) -> PendingRequest:
    req = ProxiedRequest("POST", "/v1/chat/completions", b"", (), b"", None, prefix_text=prefix)
    meta = RequestMetadata(request_id="r", internal_request_id=uuid.uuid4().hex)
    return PendingRequest(args=[req], kwargs={}, metadata=meta)


def _router(imbalance: int = 4) -> PrefixAwareRouter:
    r = PrefixAwareRouter(deployment_id=DEP, handle_source=DeploymentHandleSource.UNKNOWN)
    r.initialize_state(chunk_chars=16, imbalance=imbalance)
    return r


def _route(router: PrefixAwareRouter, replicas: list[Any], prefix: str, to: str | None = None) -> list[list[str]]:
    """One routing decision: the ranks chosen, then Ray sending to rank 0's replica `to` (or its first)."""
    pending = _pending(prefix)
    ranks = LOOP.run_until_complete(router.choose_replicas(replicas, pending))
    chosen = next(r for r in ranks[0] if to is None or r.replica_id.unique_id == to)
    router.on_request_routed(pending, chosen.replica_id, None)  # type: ignore[arg-type]
    return [[r.replica_id.unique_id for r in rank] for rank in ranks]


def test_new_prefix_goes_to_all_replicas_then_sticks() -> None:
    router, reps = _router(), _replicas("a", "b")
    first = _route(router, reps, SYSTEM + "q1")
    assert len(first) == 1 and sorted(first[0]) == ["a", "b"]  # unknown prefix: Ray's least loaded
    owner = first[0][0]
    for q in ("q2", "q3", "a longer question"):
        ranks = _route(router, reps, SYSTEM + q)
        assert ranks[0] == [owner] and sorted(ranks[1]) == ["a", "b"]  # owner first, everyone as fallback
    s = router.stats
    assert (s.routed, s.with_prefix, s.known_prefix, s.prefix_hits) == (4, 4, 3, 3)


def test_short_prompts_have_no_prefix_and_spread() -> None:
    router, reps = _router(), _replicas("a", "b", "c")
    seen = set()
    for _ in range(40):
        seen.add(_route(router, reps, "hi")[0][0])
    assert seen == {"a", "b", "c"}  # shuffled ties: an idle cluster uses every replica
    assert router.stats.with_prefix == 0


def test_busy_owner_is_passed_over_for_the_least_loaded() -> None:
    router, reps = _router(imbalance=3), _replicas("a", "b")
    owner = _route(router, reps, SYSTEM)[0][0]
    other = "b" if owner == "a" else "a"
    cache = router.replica_queue_len_cache
    cache.update(ReplicaID(unique_id=owner, deployment_id=DEP), 5)
    cache.update(ReplicaID(unique_id=other, deployment_id=DEP), 1)
    ranks = _route(router, reps, SYSTEM + "x", to=other)
    assert len(ranks) == 1  # affinity dropped: one rank, Ray picks the least loaded of it
    cache.update(ReplicaID(unique_id=owner, deployment_id=DEP), 3)
    cache.update(ReplicaID(unique_id=other, deployment_id=DEP), 2)
    assert _route(router, reps, SYSTEM + "y")[0] == [other]  # now `other` owns it, and is not busy


def test_dead_replica_loses_its_prefixes() -> None:
    router, reps = _router(), _replicas("a", "b")
    owner = _route(router, reps, SYSTEM)[0][0]
    router.on_replica_actor_died(ReplicaID(unique_id=owner, deployment_id=DEP))
    survivors = [r for r in reps if r.replica_id.unique_id != owner]
    assert _route(router, survivors, SYSTEM) == [[survivors[0].replica_id.unique_id]]
    assert len(router.table) > 0


def test_stats_are_visible_process_wide() -> None:
    router = _router()
    _route(router, _replicas("a"), SYSTEM)
    stats = routing_stats()
    assert stats["routers"] >= 1 and stats["routed"] >= 1
