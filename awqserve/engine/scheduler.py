"""Token-budget scheduler (vLLM v1's one rule), with preemption by recompute.

Each step hands the running requests (oldest first), then the waiting ones (FIFO), a share of
`max_num_batched_tokens`: request r gets up to `r.num_tokens - r.num_computed_tokens` tokens.
Prefill is thereby chunked and decode is one token. Admission is bounded by `max_num_seqs`, free KV
blocks and free state slots. When a running request cannot get a block, the newest running
request is preempted (blocks and slot freed, back to the front of the waiting queue, recomputed
later) — the caller never sees an out-of-blocks error.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from awqserve.engine.block_manager import BlockManager
from awqserve.engine.request import Request, RequestStatus
from awqserve.engine.state_pool import StatePool


@dataclass
class SchedulerOutput:
    """One step's batch: `requests[i]` computes `num_scheduled_tokens[i]` tokens starting at its
    `num_computed_tokens` (not yet advanced). `new_state_slots` must be zeroed before the forward."""

    requests: list[Request] = field(default_factory=list)
    num_scheduled_tokens: list[int] = field(default_factory=list)
    new_state_slots: list[int] = field(default_factory=list)
    preempted: list[Request] = field(default_factory=list)

    @property
    def total_tokens(self) -> int:
        return sum(self.num_scheduled_tokens)

    @property
    def is_empty(self) -> bool:
        return not self.requests


@dataclass
class ModelRunnerOutput:
    """What the runner returns: for each scheduled request (same order) the sampled token id, or
    None when the request's prefill is not complete yet; plus logprob records where asked."""

    sampled_token_ids: list[int | None]
    logprobs: list[object | None] = field(default_factory=list)  # TokenLogprob per request
    prompt_logprobs: list[list[object] | None] = field(default_factory=list)  # TokenLogprobs for the chunk


class Scheduler:
    """Owns the waiting queue and the running list; mutates requests' counters and blocks."""

    def __init__(self, *, max_num_seqs: int, max_num_batched_tokens: int, block_manager: BlockManager,
                 state_pool: StatePool | None = None) -> None:
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.block_manager = block_manager
        self.state_pool = state_pool
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.num_preemptions = 0

    # -- queue management ------------------------------------------------------------------------
    def add_request(self, request: Request) -> None:
        request.status = RequestStatus.WAITING
        self.waiting.append(request)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def finish(self, request: Request, status: RequestStatus) -> None:
        """Retire a request (stop, length, abort, error): frees its blocks and slot at once."""
        if request.status.is_finished:
            return
        if request.status == RequestStatus.RUNNING:
            self.running.remove(request)
        else:
            self.waiting.remove(request)
        self._release(request)
        request.status = status

    def _release(self, request: Request) -> None:
        self.block_manager.free(request)
        if request.state_slot is not None and self.state_pool is not None:
            self.state_pool.free(request.state_slot)
        request.state_slot = None

    def _preempt(self, request: Request) -> None:
        self._release(request)
        request.status = RequestStatus.WAITING
        request.num_computed_tokens = 0
        request.metrics.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(request)

    # -- the step --------------------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.max_num_batched_tokens

        # Running requests first, oldest first; preempt from the newest end when out of blocks.
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            n = min(req.num_tokens - req.num_computed_tokens, budget)
            if not self._make_room(req, n, out):
                break  # req itself was preempted: everything after it is gone too
            out.requests.append(req)
            out.num_scheduled_tokens.append(n)
            budget -= n
            i += 1

        # Waiting requests in FIFO order; none are admitted in a step that had to preempt.
        while self.waiting and budget > 0 and not out.preempted and len(self.running) < self.max_num_seqs:
            req = self.waiting[0]
            if self._waits_for_fork(req):
                break
            n = self._admit(req, budget, out)
            if n == 0:
                break
            self.waiting.popleft()
            self.running.append(req)
            out.requests.append(req)
            out.num_scheduled_tokens.append(n)
            budget -= n
        return out

    def _make_room(self, req: Request, n: int, out: SchedulerOutput) -> bool:
        """Grow `req` by n token slots, preempting newest requests as needed; False if req was preempted."""
        while not self.block_manager.append_slots(req, n):
            victim = self.running.pop()
            self._preempt(victim)
            out.preempted.append(victim)
            if victim is req:
                return False
        return True

    def _admit(self, req: Request, budget: int, out: SchedulerOutput) -> int:
        """Allocate blocks (and a state slot) for a waiting request; tokens scheduled, 0 if it does not fit."""
        bm = self.block_manager
        if self.state_pool is not None and self.state_pool.num_free == 0:
            return 0
        cached = bm.find_cached_prefix(req)
        n = min(req.num_tokens - len(cached) * bm.block_size, budget)
        if not bm.allocate(req, n, cached):
            return 0
        if req.num_output_tokens == 0 and req.metrics.num_preemptions == 0:
            req.num_cached_tokens = req.num_computed_tokens
        if self.state_pool is not None:
            req.state_slot = self.state_pool.allocate()
            out.new_state_slots.append(req.state_slot)  # type: ignore[arg-type]
        req.status = RequestStatus.RUNNING
        return n

    def _waits_for_fork(self, req: Request) -> bool:
        """n > 1 with prefix caching: a sibling waits until sample 0 has computed the prompt, so the
        prompt's full blocks are in the cache and are shared instead of recomputed."""
        first = req.fork_of
        return (first is not None and self.block_manager.enable_prefix_caching
                and first.status == RequestStatus.RUNNING
                and first.num_computed_tokens < first.num_prompt_tokens)

    # -- after the forward -----------------------------------------------------------------------
    def update_from_output(self, sched: SchedulerOutput, result: ModelRunnerOutput) -> list[Request]:
        """Advance computed counters, append sampled tokens, register full blocks in the prefix
        cache. Returns the requests that received a new token (stop checks are the caller's)."""
        got_token: list[Request] = []
        for req, n, tok in zip(sched.requests, sched.num_scheduled_tokens, result.sampled_token_ids):
            if req.status != RequestStatus.RUNNING:
                continue  # aborted while the step ran
            req.num_computed_tokens += n
            self.block_manager.cache_full_blocks(req)
            if tok is not None:
                req.append_token(tok)
                got_token.append(req)
        return got_token
