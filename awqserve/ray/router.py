"""`PrefixAwareRouter`: Ray Serve request router that keeps a prompt prefix on the replica that has it.

Runs inside every process that holds a handle to the engine deployment (the ingress replicas), on
Ray Serve's public request-router API (`ray.serve.request_router.RequestRouter`). Ray does the rest:
probing queue lengths, refusing full replicas (`max_ongoing_requests`), backoff, replica churn.

Policy, per request:
1. Its prompt prefix (`ProxiedRequest.prefix_text`, cut into chained chunk keys) is looked up in a
   `PrefixTable`; the live replica owning the deepest prefix is preferred, as a rank of its own …
2. … unless it is `imbalance` or more requests busier than the least-loaded replica (a hot prefix
   must not pile onto one replica while another idles), then
3. every replica as one rank: Ray picks the least-loaded one that is not full.
The replica a request was sent to becomes the owner of all its prefix keys.
"""
from __future__ import annotations

import importlib
import logging
import random
from collections import OrderedDict
from typing import Any, Hashable, List, Optional

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from awqserve.ray.prefix import PrefixTable, RoutingStats

logger = logging.getLogger("ray.serve")
# Routers living in this process (normally one: the ingress's handle to the engine deployment);
# the ingress reads their counters for `/awqserve/routing`.
ROUTERS: list["PrefixAwareRouter"] = []
_MAX_DECISIONS = 10_000  # decisions of requests cancelled before routing are dropped past this


class PrefixAwareRouter(RequestRouter):
    """Prefix-affine, least-loaded fallback. Options (`request_router_kwargs`): `chunk_chars` (prefix
    granularity), `capacity` (keys remembered), `imbalance` (queue-length gap that overrides affinity)."""

    def initialize_state(self, chunk_chars: int = 64, capacity: int = 200_000,
                         imbalance: int = 4, **_: Any) -> None:
        self.table = PrefixTable(chunk_chars, capacity)
        self.imbalance = max(1, int(imbalance))
        self.stats = RoutingStats()
        # internal request id -> (prefix keys, preferred owner), from choice to routed callback
        self._decisions: OrderedDict[str, tuple[list[bytes], Hashable | None]] = OrderedDict()
        _registry().append(self)
        logger.info("prefix-aware router for %s: chunk %d chars, imbalance %d", self.app_name,
                    chunk_chars, self.imbalance)

    async def choose_replicas(self, candidate_replicas: List[RunningReplica],
                              pending_request: Optional[PendingRequest] = None) -> List[List[RunningReplica]]:
        if not candidate_replicas:
            return []
        if pending_request is None:
            return [random.sample(candidate_replicas, len(candidate_replicas))]
        # every rank below covers all replicas: if none takes the request, back off before retrying
        pending_request.routing_context.should_backoff = True
        keys = self.table.keys(_prefix_of(pending_request))
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        owner = self.table.match(keys, by_id).replica if keys else None
        self._remember(pending_request, keys, owner)
        # shuffled: Ray takes the least-loaded of a rank and the first of equals, which would send
        # every request of an idle cluster to the same replica
        everyone = random.sample(candidate_replicas, len(candidate_replicas))
        if owner is None or self._too_busy(by_id[owner], candidate_replicas):  # type: ignore[index]
            return [everyone]
        return [[by_id[owner]], everyone]  # type: ignore[index]

    def _too_busy(self, owner: RunningReplica, candidates: List[RunningReplica]) -> bool:
        lens = [self._queue_len(r) for r in candidates]
        return self._queue_len(owner) - min(lens) >= self.imbalance

    def _queue_len(self, replica: RunningReplica) -> int:
        q = self.replica_queue_len_cache.get(replica.replica_id)
        return 0 if q is None else int(q)  # unknown: probed by Ray before it is chosen anyway

    def _remember(self, pending: PendingRequest, keys: list[bytes], owner: Hashable | None) -> None:
        rid = pending.metadata.internal_request_id
        self._decisions[rid] = (keys, owner)
        self._decisions.move_to_end(rid)
        while len(self._decisions) > _MAX_DECISIONS:
            self._decisions.popitem(last=False)

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID,
                          result: Any) -> None:
        keys, owner = self._decisions.pop(pending_request.metadata.internal_request_id, ([], None))
        s = self.stats
        s.routed += 1
        if keys:
            s.with_prefix += 1
            if owner is not None:
                s.known_prefix += 1
                if owner == replica_id.unique_id:
                    s.prefix_hits += 1
                else:
                    s.fallbacks += 1
            self.table.record(keys, replica_id.unique_id)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self.table.forget(replica_id.unique_id)  # its cache died with it

    def update_replicas(self, replicas: List[RunningReplica]) -> None:
        gone = {r.unique_id for r in self.curr_replicas} - {r.replica_id.unique_id for r in replicas}
        super().update_replicas(replicas)
        for unique_id in gone:
            self.table.forget(unique_id)


def _registry() -> list["PrefixAwareRouter"]:
    """ROUTERS of the imported module: Ray may hand the router class over pickled by value, with its
    own copy of this module's globals, so name the module instead of using the global directly."""
    module = importlib.import_module("awqserve.ray.router")
    routers: list[PrefixAwareRouter] = module.ROUTERS
    return routers


def _prefix_of(pending: PendingRequest) -> str:
    """The prompt text the ingress attached to the request (first positional argument)."""
    for arg in pending.args or ():
        text = getattr(arg, "prefix_text", None)
        if isinstance(text, str):
            return text
    return ""


def routing_stats() -> dict[str, float]:
    """Counters summed over the routers in this process (see `RoutingStats`)."""
    total, routers = RoutingStats(), _registry()
    for r in routers:
        for field in ("routed", "with_prefix", "known_prefix", "prefix_hits", "fallbacks"):
            setattr(total, field, getattr(total, field) + getattr(r.stats, field))
    out = total.as_dict()
    out["routers"] = len(routers)
    out["prefix_keys"] = sum(len(r.table) for r in routers)
    return out
