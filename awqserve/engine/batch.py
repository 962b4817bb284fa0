"""The two contracts of one engine step (vLLM v1's): `SchedulerOutput` → runner → `ModelRunnerOutput`.

The step, in order (LLMEngine.step):
1. `Scheduler.schedule()` picks requests and token counts; it allocates blocks and state slots but
   does not advance any counter (`num_computed_tokens` is where this step's tokens start).
2. `ModelRunner.execute(sched)` reads the requests (tokens, blocks, slots, counters) and writes
   nothing on them; it returns a `ModelRunnerOutput` in the same order.
3. `Scheduler.update_from_output(sched, result)` advances counters, appends sampled tokens, runs
   `check_stop` (EOS, stop ids, length) and frees what finished.
4. `OutputProcessor.process(...)` detokenizes, applies stop strings (through the scheduler), and
   builds the `RequestOutput`s.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from awqserve.engine.block_manager import KvCopy
from awqserve.engine.outputs import TokenLogprob
from awqserve.engine.request import Request


@dataclass
class SchedulerOutput:
    """One step's batch: `requests[i]` computes `num_scheduled_tokens[i]` tokens starting at its
    `num_computed_tokens` (not yet advanced). `preempted` lists the requests sent back to waiting.
    `kv_copies` (partial prefix-cache hits) must be done, in order, before the step's forward."""

    requests: list[Request] = field(default_factory=list)
    num_scheduled_tokens: list[int] = field(default_factory=list)
    preempted: list[Request] = field(default_factory=list)
    kv_copies: list[KvCopy] = field(default_factory=list)

    @property
    def total_tokens(self) -> int:
        return sum(self.num_scheduled_tokens)

    @property
    def is_empty(self) -> bool:
        return not self.requests


@dataclass
class ModelRunnerOutput:
    """Per scheduled request (same order): the sampled token id, or None when the request's prefill is
    not complete yet; its logprob record when asked; and the prompt-logprob records of the chunk's
    positions not scored before (`Request.prompt_logprobs_done` onwards), or None. `errors` maps the
index of a request that failed in this step (its sampling, its logits, or its own forward) to the
error it ends with; such a request has no token and its step is not applied (engine/faults.py)."""

    sampled_token_ids: list[int | None]
    logprobs: list[TokenLogprob | None] = field(default_factory=list)
    prompt_logprobs: list[list[TokenLogprob] | None] = field(default_factory=list)
    errors: dict[int, Exception] = field(default_factory=dict)
