"""LLMEngine: the synchronous step loop (add_request / step / abort), owned by one thread.

    step() = Scheduler.schedule() → ModelRunner.execute() → Scheduler.update_from_output()
             → OutputProcessor.process() → one RequestOutput per API request that changed

(the contract of each arrow: engine/batch.py). Input validation and n>1 fan-out are the
`InputProcessor`'s; text, deltas and finish accounting the `OutputProcessor`'s; construction (device,
dtype, loading, caches) is `engine_factory.build_engine`. An exception inside a step fails only the
requests of that step (their outputs carry `error`); the engine goes on.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch

from awqserve.config.engine_config import EngineConfig
from awqserve.engine.batch import SchedulerOutput
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
from awqserve.errors import RequestError
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
        except Exception as e:  # noqa: BLE001 - any failure fails this step's requests, not the engine
            outputs += self._fail(sched, e)
        else:
            got_token = self.scheduler.update_from_output(sched, result)
            outputs += self.outputs.process(sched, result, got_token)
        self._publish_stats()
        return outputs

    def _fail(self, sched: SchedulerOutput, exc: Exception) -> list[RequestOutput]:
        """Finish every request of a failed step with a RequestError (503 for out-of-memory)."""
        if isinstance(exc, torch.OutOfMemoryError):
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            err = RequestError(f"out of memory while running a batch of {sched.total_tokens} tokens; retry later, "
                               f"or lower --max-num-batched-tokens / --max-num-seqs", status=503,
                               kind="out_of_memory")
        else:
            err = RequestError(f"engine error: {type(exc).__name__}: {exc}", status=500, kind="internal_error")
        log.error("step failed for %d requests: %s", len(sched.requests), exc, exc_info=exc)
        return self.outputs.fail(sched.requests, err)

    # -- stats -----------------------------------------------------------------------------------
    def _publish_stats(self) -> None:
        s = self.scheduler.make_stats()
        self.stats.update(num_running=s.num_running, num_waiting=s.num_waiting, kv_usage=s.kv_usage,
                          state_usage=s.state_usage, num_preemptions=s.num_preemptions,
                          prefix_cache_queries=s.prefix_cache_queries, prefix_cache_hits=s.prefix_cache_hits)
