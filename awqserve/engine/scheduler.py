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
from dataclasses import dataclass

from awqserve.engine.batch import ModelRunnerOutput, SchedulerOutput
from awqserve.engine.block_manager import BlockManager
from awqserve.engine.request import Request, RequestStatus
from awqserve.engine.state_pool import StatePool


def check_stop(request: Request) -> RequestStatus | None:
    """The finish decided by the newest token's id (vLLM's `check_stop`): a stop token or EOS once
    `min_tokens` are out (the token itself is not part of the text); a complete grammar (nothing but
    EOS could follow); else the length limit. Stop strings are the detokenizer's, applied after this
    (`Scheduler.finish_by_stop_string`)."""
    token, params = request.all_token_ids[-1], request.params
    if token in request.stop_token_ids and request.num_output_tokens > params.min_tokens:
        request.stop_reason = token if token in params.stop_token_ids else None
        return RequestStatus.FINISHED_STOPPED
    if request.grammar is not None and request.grammar.is_terminated():
        return RequestStatus.FINISHED_STOPPED
    if request.num_output_tokens >= request.max_tokens:
        return RequestStatus.FINISHED_LENGTH
    return None


GRAMMAR_VIOLATION = "grammar_violation"
"""`stop_reason` of a request whose sampled token its grammar rejected (finished with an error)."""


@dataclass(frozen=True)
class SchedulerStats:
    """A snapshot of the scheduler's load and counters (monotonic ones since start)."""

    num_running: int
    num_waiting: int
    kv_usage: float
    state_usage: float
    num_preemptions: int
    prefix_cache_queries: int
    prefix_cache_hits: int


class Scheduler:
    """Owns the waiting queue and the running list, and every request counter (see request.py)."""

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
        """Retire a request (stop, length, abort, error): frees its blocks and slot at once. No-op if
        already finished."""
        if request.status.is_finished:
            return
        if request.status == RequestStatus.RUNNING:
            self.running.remove(request)
        else:
            self.waiting.remove(request)
        self._release(request, keep_kv=status != RequestStatus.FINISHED_ERROR)
        request.status = status

    def finish_by_stop_string(self, request: Request, stop: str) -> None:
        """A stop string found in the newest token's text ends the request. It takes precedence over a
        length stop decided for the same token (as in vLLM): the answer did end with the stop string."""
        if request.status == RequestStatus.FINISHED_LENGTH:
            request.status = RequestStatus.FINISHED_STOPPED
        else:
            self.finish(request, RequestStatus.FINISHED_STOPPED)
        request.stop_reason = stop

    def make_stats(self) -> SchedulerStats:
        bm, pool = self.block_manager, self.state_pool
        return SchedulerStats(num_running=len(self.running), num_waiting=len(self.waiting), kv_usage=bm.usage,
                              state_usage=pool.usage if pool else 0.0, num_preemptions=self.num_preemptions,
                              prefix_cache_queries=bm.prefix_queries, prefix_cache_hits=bm.prefix_hits)

    def _release(self, request: Request, keep_kv: bool = True) -> None:
        # A failed request's KV may be garbage: none of its partial tail may be copied later.
        self.block_manager.free(request, keep_partial=keep_kv)
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
        hit = bm.find_cached_prefix(req)
        n = min(req.num_tokens - hit.num_tokens(bm.block_size), budget)
        alloc = bm.allocate(req, n, hit)
        if alloc is None:
            return 0
        if alloc.copy is not None:
            out.kv_copies.append(alloc.copy)
        req.num_computed_tokens = alloc.num_cached_tokens
        if req.num_output_tokens == 0 and req.metrics.num_preemptions == 0:
            req.num_cached_tokens = alloc.num_cached_tokens
        if self.state_pool is not None:
            # A recycled slot still holds its previous owner's state: GDN layers start every sequence
            # with no computed tokens from zero (layers/gdn.py), so nothing needs clearing here.
            req.state_slot = self.state_pool.allocate()
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
        """Advance computed counters and prompt-logprob progress, register full blocks in the prefix
        cache, append sampled tokens and apply `check_stop` (freeing what finished). Returns the
        requests that received a token this step, finished ones included. A request that failed in the
        step (`result.errors`) is left as it was: its KV may be garbage and must not reach the prefix
        cache; the engine fails it right after."""
        got_token: list[Request] = []
        for i, (req, n) in enumerate(zip(sched.requests, sched.num_scheduled_tokens)):
            if req.status != RequestStatus.RUNNING or i in result.errors:
                continue  # aborted while the step ran, or failed in it
            req.num_computed_tokens += n
            plp = result.prompt_logprobs[i] if result.prompt_logprobs else None
            if plp:
                req.prompt_logprobs_done += len(plp)
            self.block_manager.cache_full_blocks(req)
            tok = result.sampled_token_ids[i]
            if tok is None:
                continue
            req.all_token_ids.append(tok)
            got_token.append(req)
            if req.grammar is not None and not req.grammar.accept_token(tok):
                # the mask allowed only grammar tokens: this is a bug, never a half-valid answer
                req.stop_reason = GRAMMAR_VIOLATION
                self.finish(req, RequestStatus.FINISHED_ERROR)
                continue
            status = check_stop(req)
            if status is not None:
                self.finish(req, status)
        return got_token
