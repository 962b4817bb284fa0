"""Output processing: from a step's updated requests to one `RequestOutput` per API request that changed.

Owns what the API sees and the scheduler does not need: each sample's detokenizer state (text, stop
strings), its logprob records, the prompt logprobs of the group, what has already been delivered
(deltas), and the per-request finish accounting (stats counters and listeners). Stop strings end a
request through `Scheduler.finish_by_stop_string`, so the scheduler stays the one owner of status.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from awqserve.engine.batch import ModelRunnerOutput, SchedulerOutput
from awqserve.engine.detokenizer import DetokState, Detokenizer
from awqserve.engine.input_processor import RequestGroup
from awqserve.engine.outputs import CompletionOutput, RequestOutput, TokenLogprob
from awqserve.engine.request import Request, RequestStatus
from awqserve.engine.scheduler import GRAMMAR_VIOLATION, Scheduler
from awqserve.engine.stats import StatsHolder
from awqserve.errors import RequestError


@dataclass
class _Sample:
    request: Request
    detok: DetokState
    logprobs: list[TokenLogprob] | None
    sent_tokens: int = 0
    sent_logprobs: int = 0


@dataclass
class _RequestState:
    group: RequestGroup
    samples: list[_Sample]
    prompt_logprobs: list[TokenLogprob | None] | None
    error: Exception | None = None

    @property
    def finished(self) -> bool:
        return all(s.request.is_finished for s in self.samples)


@dataclass
class OutputProcessor:
    """Per-request output state, keyed by API request id. Engine thread only."""

    detokenizer: Detokenizer
    scheduler: Scheduler
    stats: StatsHolder
    _states: dict[str, _RequestState] = field(default_factory=dict)
    _by_child: dict[int, _Sample] = field(default_factory=dict)  # id(Request) -> its sample

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._states

    def add(self, group: RequestGroup) -> None:
        samples = [_Sample(c, self.detokenizer.new_state(group.prompt_token_ids),
                           [] if c.params.logprobs is not None else None) for c in group.children]
        plp: list[TokenLogprob | None] | None = [None] if group.children[0].wants_prompt_logprobs else None
        self._states[group.request_id] = _RequestState(group, samples, plp)
        for s in samples:
            self._by_child[id(s.request)] = s

    def __len__(self) -> int:
        """API requests not yet retired (a leak shows here: it must fall to 0 when idle)."""
        return len(self._states)

    def is_finished(self, request_id: str) -> bool:
        state = self._states.get(request_id)
        return state is None or state.finished

    def children(self, request_id: str) -> list[Request]:
        return list(self._states[request_id].group.children)

    # -- one step --------------------------------------------------------------------------------
    def process(self, sched: SchedulerOutput, result: ModelRunnerOutput, got_token: list[Request]) -> list[RequestOutput]:
        """Fold a step's results in (the scheduler has already updated the requests)."""
        now = time.monotonic()
        touched: dict[str, _RequestState] = {}
        for i, req in enumerate(sched.requests):
            plp = result.prompt_logprobs[i] if result.prompt_logprobs else None
            state = self._states[req.group_id]
            if plp and state.prompt_logprobs is not None:
                state.prompt_logprobs.extend(plp)
        itls: list[float] = []
        sampled = {id(r) for r in got_token}
        for i, req in enumerate(sched.requests):
            if id(req) not in sampled:
                continue
            lp = result.logprobs[i] if result.logprobs else None
            self._on_token(self._by_child[id(req)], lp, now, itls)
            touched[req.group_id] = self._states[req.group_id]
        outputs = [self._output(s) for s in touched.values()]
        self._account(sched, result, len(got_token), itls)
        return outputs

    def _on_token(self, sample: _Sample, lp: TokenLogprob | None, now: float, itls: list[float]) -> None:
        req, m = sample.request, sample.request.metrics
        if lp is not None and sample.logprobs is not None:
            sample.logprobs.append(lp)
        if m.first_token_time is None:
            m.first_token_time = now
        elif m.last_token_time is not None:
            itls.append(now - m.last_token_time)
        m.last_token_time = now
        token = req.all_token_ids[-1]
        if req.status == RequestStatus.FINISHED_ERROR or (
                req.status == RequestStatus.FINISHED_STOPPED and token in req.stop_token_ids):
            return  # a stop token / EOS is not part of the text (a token completing a grammar is)
        stop = self.detokenizer.process_token(sample.detok, token, req.params, req.num_output_tokens)
        if stop is not None:
            self.scheduler.finish_by_stop_string(req, stop)

    def _account(self, sched: SchedulerOutput, result: ModelRunnerOutput, num_sampled: int,
                 itls: list[float]) -> None:
        prompt = 0
        for i, (req, n) in enumerate(zip(sched.requests, sched.num_scheduled_tokens)):
            if i in result.errors:
                continue  # its counters were not advanced: nothing of this step counts
            start = req.num_computed_tokens - n  # already advanced by update_from_output
            prompt += max(0, min(start + n, req.num_prompt_tokens) - start)
        self.stats.add(prompt_tokens=prompt, generation_tokens=num_sampled, num_steps=1)
        for listener in self.stats.listeners:
            listener.on_step(num_prompt_tokens=prompt, num_generation_tokens=num_sampled,
                             inter_token_latencies=itls)

    # -- aborts and failures ---------------------------------------------------------------------
    def final_output(self, request_id: str) -> RequestOutput:
        """The output of a request that was just finished from outside a step (abort)."""
        return self._output(self._states[request_id])

    def fail(self, requests: list[Request], err: Exception) -> list[RequestOutput]:
        """Finish every API request that has a sample in `requests` with `err`."""
        states = {r.group_id: self._states[r.group_id] for r in requests if r.group_id in self._states}
        for state in states.values():
            state.error = err
            for s in state.samples:
                self.scheduler.finish(s.request, RequestStatus.FINISHED_ERROR)
        return [self._output(s) for s in states.values()]

    # -- outputs ---------------------------------------------------------------------------------
    def _output(self, state: _RequestState) -> RequestOutput:
        """Incremental + cumulative state of a request; retires it once every sample is finished."""
        if state.error is None and any(s.request.stop_reason == GRAMMAR_VIOLATION for s in state.samples):
            state.error = RequestError("internal error: a sampled token broke the request's output grammar",
                                       status=500, kind="internal_error")
        comps = [self._completion(s) for s in state.samples]
        finished = state.finished
        if finished:
            self._retire(state)
        g, plp = state.group, state.prompt_logprobs
        return RequestOutput(request_id=g.request_id, prompt_token_ids=g.prompt_token_ids, outputs=comps,
                             finished=finished, prompt_logprobs=list(plp) if plp is not None else None,
                             metrics=g.metrics, num_cached_tokens=g.children[0].num_cached_tokens,
                             error=state.error)

    def _completion(self, s: _Sample) -> CompletionOutput:
        req, st, lps = s.request, s.detok, s.logprobs
        out_ids = req.output_token_ids
        delta = self.detokenizer.take_delta(st, req.is_finished)
        comp = CompletionOutput(
            index=req.index, text=st.text[:st.emitted], token_ids=out_ids,
            logprobs=list(lps) if lps is not None else None, finish_reason=req.status.finish_reason,
            stop_reason=req.stop_reason, text_delta=delta, token_ids_delta=out_ids[s.sent_tokens:],
            logprobs_delta=lps[s.sent_logprobs:] if lps is not None else None)
        s.sent_tokens = len(out_ids)
        s.sent_logprobs = len(lps) if lps is not None else 0
        return comp

    def _retire(self, state: _RequestState) -> None:
        g = state.group
        self._states.pop(g.request_id, None)
        for s in state.samples:
            self._by_child.pop(id(s.request), None)
        m = g.metrics
        m.finished_time = time.monotonic()
        reason = "error" if state.error is not None else (g.children[0].status.finish_reason or "abort")
        self.stats.count_finished(reason)
        if state.error is not None:
            self.stats.count_failure(getattr(state.error, "kind", "internal_error"))
        gen = sum(c.num_output_tokens for c in g.children)
        end, first, sched = m.finished_time, m.first_token_time, m.scheduled_time
        for listener in self.stats.listeners:
            listener.on_request_finished(
                finish_reason=reason, prompt_tokens=len(g.prompt_token_ids), generation_tokens=gen,
                queue_time=(sched or end) - m.arrival_time,
                ttft=None if first is None else first - m.arrival_time,
                prefill_time=None if first is None or sched is None else first - sched,
                decode_time=None if first is None else end - first, e2e_time=end - m.arrival_time)
