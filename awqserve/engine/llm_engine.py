"""LLMEngine: the synchronous step loop (add_request / step / abort), owned by one thread.

    step() = Scheduler.schedule() → ModelRunner.execute() → Scheduler.update_from_output()
             → OutputProcessor.process() → one RequestOutput per API request that changed

(the contract of each arrow: engine/batch.py). Input validation and n>1 fan-out are the
`InputProcessor`'s; text, deltas and finish accounting the `OutputProcessor`'s; construction (device,
dtype, loading, caches) is `engine_factory.build_engine`.

Failures (engine/faults.py): a request whose sampling or logits row fails ends with an error, alone.
When the forward itself raises, the batch's requests are run again one by one (attention-only models:
re-running rewrites the same KV slots; hybrid models' recurrent state is updated in place, so there the
whole batch fails); those that fail alone end with the error, the others go on. The engine goes on.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch

from awqserve.config.engine_config import EngineConfig
from awqserve.engine.batch import ModelRunnerOutput, SchedulerOutput
from awqserve.engine.faults import FaultInjector, step_error
from awqserve.engine.input_processor import InputProcessor
from awqserve.engine.model_runner import ModelRunner
from awqserve.engine.output_processor import OutputProcessor
from awqserve.engine.outputs import RequestOutput
from awqserve.engine.progress import LoadProgress
from awqserve.engine.protocol import EngineInfo
from awqserve.engine.request import RequestStatus
from awqserve.engine.sampling_params import SamplingParams
from awqserve.engine.scheduler import Scheduler
from awqserve.engine.stats import StatsHolder
from awqserve.engine.structured_output import StructuredOutputManager
from awqserve.models.base import CausalLM

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineParts:
    """What `build_engine` assembles; the engine only runs them."""

    config: EngineConfig
    info: EngineInfo
    model: CausalLM
    tokenizer: Any  # a Hugging Face tokenizer (or a test stand-in with encode/decode)
    runner: ModelRunner
    scheduler: Scheduler
    inputs: InputProcessor
    outputs: OutputProcessor
    structured: StructuredOutputManager
    stats: StatsHolder
    device: torch.device


class LLMEngine:
    """Serves requests step by step. Not thread-safe: every method must be called from the thread that
    owns the engine (AsyncEngine's engine thread, or the offline caller)."""

    def __init__(self, parts: EngineParts) -> None:
        self.config = parts.config
        self.info = parts.info
        self.model = parts.model
        self.tokenizer = parts.tokenizer
        self.runner = parts.runner
        self.scheduler = parts.scheduler
        self.inputs = parts.inputs
        self.outputs = parts.outputs
        self.structured = parts.structured
        self.stats = parts.stats
        self.device = parts.device
        self._aborted: list[str] = []
        self.faults = FaultInjector.from_env(self.tokenizer)  # None in production (AWQSERVE_FAULT_INJECT)
        self.runner.faults = self.faults
        self._publish_stats()

    @classmethod
    def from_config(cls, config: EngineConfig, *, stats: StatsHolder | None = None, model: CausalLM | None = None,
                    tokenizer: Any = None, progress: LoadProgress | None = None) -> "LLMEngine":
        """Build (load the model unless one is given, for tests) and return an engine; `progress`
        follows the start-up phases (engine/progress.py)."""
        from awqserve.engine.engine_factory import build_engine

        return build_engine(config, stats=stats, model=model, tokenizer=tokenizer, progress=progress)

    @property
    def max_model_len(self) -> int:
        return self.info.max_model_len

    # -- requests --------------------------------------------------------------------------------
    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams,
                    arrival_time: float | None = None) -> None:
        """Queue a request. Raises InvalidRequestError (a ValueError) for a prompt the engine cannot
        serve or a grammar that does not compile, ValueError for a duplicate id. A `max_tokens` past
        the context is capped to it."""
        if request_id in self.outputs:
            raise ValueError(f"request id {request_id!r} is already in use")
        self.inputs.validate(prompt_token_ids, params, strict_length=False)
        group = self.inputs.make_group(request_id, prompt_token_ids, params, arrival_time)
        if params.grammar is not None:  # raises GrammarError (an InvalidRequestError) for a bad spec
            for child in group.children:
                child.grammar = self.structured.matcher(params.grammar)
        self.outputs.add(group)
        if self.faults is not None:
            self.faults.on_add(request_id, prompt_token_ids)
        for child in group.children:
            self.scheduler.add_request(child)

    def abort(self, request_id: str) -> bool:
        """Stop a request now: its blocks and state slot are freed immediately and the next step()
        returns its final output (finish_reason "abort"). False if unknown or already finished."""
        if self.outputs.is_finished(request_id):
            return False
        for child in self.outputs.children(request_id):
            self.scheduler.finish(child, RequestStatus.FINISHED_ABORTED)
        self._aborted.append(request_id)
        return True

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished() or bool(self._aborted)

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting)

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    # -- the step --------------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """Run one scheduled batch; return an output for every request that changed."""
        outputs = [self.outputs.final_output(rid) for rid in self._aborted]
        self._aborted.clear()
        sched = self.scheduler.schedule()
        if sched.is_empty:
            self._publish_stats()
            return outputs
        now = time.monotonic()
        for req in sched.requests:
            if req.metrics.scheduled_time is None:
                req.metrics.scheduled_time = now
        try:
            result = self.runner.execute(sched)
        except Exception as e:  # noqa: BLE001 - a failing forward fails its requests, never the engine
            result = self._isolate(sched, e)
        got_token = self.scheduler.update_from_output(sched, result)
        outputs += self.outputs.process(sched, result, got_token)
        outputs += self._fail_rows(sched, result)
        self._publish_stats()
        return outputs

    def _isolate(self, sched: SchedulerOutput, exc: Exception) -> ModelRunnerOutput:
        """After the batch's forward raised: run each request alone and keep the errors of those that
        fail alone (all of them where re-running is unsafe: one request, or recurrent state)."""
        if isinstance(exc, torch.OutOfMemoryError) and self.device.type == "cuda":
            torch.cuda.empty_cache()
        reqs, n = sched.requests, len(sched.requests)
        log.error("step of %d request(s) failed: %s: %s", n, type(exc).__name__, exc)
        merged = ModelRunnerOutput([None] * n, [None] * n, [None] * n)
        if n == 1 or self.runner.spec.is_hybrid:
            merged.errors = {i: step_error(exc, sched.total_tokens) for i in range(n)}
            return merged
        for i, (req, q) in enumerate(zip(reqs, sched.num_scheduled_tokens)):
            try:
                alone = self.runner.execute(SchedulerOutput([req], [q]))
            except Exception as e:  # noqa: BLE001 - this request fails even alone: it is the cause
                merged.errors[i] = step_error(e, q)
                continue
            merged.sampled_token_ids[i] = alone.sampled_token_ids[0]
            merged.logprobs[i] = alone.logprobs[0] if alone.logprobs else None
            merged.prompt_logprobs[i] = alone.prompt_logprobs[0] if alone.prompt_logprobs else None
            if 0 in alone.errors:
                merged.errors[i] = alone.errors[0]
        log.error("re-run one by one: %d of %d request(s) failed alone", len(merged.errors), n)
        return merged

    def _fail_rows(self, sched: SchedulerOutput, result: ModelRunnerOutput) -> list[RequestOutput]:
        """Finish the API requests of the step's failed rows, each with its own error."""
        outputs: list[RequestOutput] = []
        for i, err in sorted(result.errors.items()):
            req = sched.requests[i]
            if req.status.is_finished and self.outputs.is_finished(req.group_id):
                continue  # already failed through a sibling sample (n > 1)
            log.warning("request %s failed: %s", req.group_id, err)
            outputs += self.outputs.fail([req], err)
        return outputs

    # -- stats -----------------------------------------------------------------------------------
    def _publish_stats(self) -> None:
        s = self.scheduler.make_stats()
        bm, pool = self.scheduler.block_manager, self.scheduler.state_pool
        self.stats.update(num_running=s.num_running, num_waiting=s.num_waiting, kv_usage=s.kv_usage,
                          state_usage=s.state_usage, num_preemptions=s.num_preemptions,
                          prefix_cache_queries=s.prefix_cache_queries, prefix_cache_hits=s.prefix_cache_hits,
                          kv_blocks_used=bm.num_blocks - bm.num_free_blocks,
                          state_slots_used=pool.num_slots - pool.num_free if pool is not None else 0,
                          tracked_requests=len(self.outputs))
