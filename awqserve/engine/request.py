"""Request: the schedulable unit of the engine (one sample of one API request).

State is a few counters (vLLM v1): `all_token_ids` (prompt, then outputs) and
`num_computed_tokens` (how many of them already have K/V in the cache or were folded into the
recurrent state). Each step the scheduler hands a request up to `num_tokens - num_computed_tokens`
new tokens; prefill chunks and decode steps are the same rule.

n > 1: every sample is its own `Request` ("child") with `group_id` = the API request id and
`index` = the sample index. Children 1..n-1 point at child 0 through `fork_of`. When prefix caching
is on, the scheduler admits them only after child 0 has computed its prompt, so they find the
prompt's full blocks in the prefix cache and share them by ref count (only the partial last block
and at least one token are recomputed). Without prefix caching (hybrid models) children prefill
independently: correct, but the prompt is computed n times.

Ownership — each field has one writer (all on the engine thread):

| field | written by |
|---|---|
| `status`, `num_computed_tokens`, `num_cached_tokens`, `all_token_ids` (appends), `stop_reason`, `state_slot`, `prompt_logprobs_done` | `Scheduler` (`check_stop` decides EOS / stop ids / length) |
| `block_ids`, `block_hashes`, `num_registered_blocks` | `BlockManager` |
| `generator` | `Sampler` (created lazily for seeded requests) |
| `grammar` | `LLMEngine` sets it at `add_request`; the `Scheduler` advances it with each sampled token |
| `metrics` | `LLMEngine` (scheduled time), `OutputProcessor` (token and finish times), `Scheduler` (preemptions) |

Text, stop strings and logprob records are not request state: they live in the `OutputProcessor`.
"""
from __future__ import annotations

import enum
import time

import torch

from awqserve.engine.outputs import RequestMetrics
from awqserve.structured.backend import GrammarMatcher
from awqserve.engine.sampling_params import SamplingParams


class RequestStatus(enum.IntEnum):
    WAITING = 0
    RUNNING = 1
    FINISHED_STOPPED = 2
    FINISHED_LENGTH = 3
    FINISHED_ABORTED = 4
    FINISHED_ERROR = 5

    @property
    def is_finished(self) -> bool:
        return self >= RequestStatus.FINISHED_STOPPED

    @property
    def finish_reason(self) -> str | None:
        return _FINISH_REASONS.get(self)


_FINISH_REASONS = {
    RequestStatus.FINISHED_STOPPED: "stop",
    RequestStatus.FINISHED_LENGTH: "length",
    RequestStatus.FINISHED_ABORTED: "abort",
    RequestStatus.FINISHED_ERROR: "abort",  # the error itself travels in RequestOutput.error
}


class Request:
    """One sequence being generated. Mutated only by the engine thread (see the ownership table).

    Invariants: `0 <= num_computed_tokens <= num_tokens`; `block_ids` covers at least
    `num_computed_tokens` token slots while RUNNING and is empty while WAITING or finished;
    `state_slot` is set only while RUNNING (hybrid models); `max_tokens` already fits the context.
    """

    def __init__(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams, *,
                 max_tokens: int, eos_token_ids: tuple[int, ...] = (), group_id: str | None = None,
                 index: int = 0, fork_of: "Request | None" = None, metrics: RequestMetrics | None = None,
                 wants_prompt_logprobs: bool | None = None) -> None:
        self.request_id = request_id
        self.group_id = group_id if group_id is not None else request_id
        self.index = index
        self.params = params
        self.max_tokens = max_tokens
        self.prompt_token_ids = list(prompt_token_ids)
        self.all_token_ids = list(prompt_token_ids)
        self.num_prompt_tokens = len(prompt_token_ids)
        self.status = RequestStatus.WAITING
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0  # prompt tokens found in the prefix cache at first admission
        self.block_ids: list[int] = []
        self.block_hashes: list[int] = []  # chained hashes of the leading full blocks (prefix cache)
        self.num_registered_blocks = 0  # leading blocks already registered in the prefix cache
        self.state_slot: int | None = None
        self.fork_of = fork_of
        # stop ids: EOS (unless ignore_eos) plus the request's own stop tokens
        self.stop_token_ids = frozenset(params.stop_token_ids) | (
            frozenset() if params.ignore_eos else frozenset(eos_token_ids))
        self.stop_reason: str | int | None = None
        # Samples of one API request share one metrics record (queue time, TTFT, preemptions).
        self.metrics = metrics or RequestMetrics(arrival_time=time.monotonic())
        # Prompt logprobs are computed for one sample of a group (sample 0) and reported once.
        self.wants_prompt_logprobs = (params.prompt_logprobs is not None if wants_prompt_logprobs is None
                                      else wants_prompt_logprobs)
        # prompt positions with a logprob entry (position 0 has none, so it counts as done)
        self.prompt_logprobs_done = 1
        self.generator: torch.Generator | None = None  # per-request noise for seeded sampling
        self.grammar: GrammarMatcher | None = None  # this sample's position in its output grammar

    # -- derived sizes ---------------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        return len(self.all_token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.all_token_ids[self.num_prompt_tokens:]

    @property
    def num_output_tokens(self) -> int:
        return len(self.all_token_ids) - self.num_prompt_tokens

    @property
    def is_finished(self) -> bool:
        return self.status.is_finished

    @property
    def needs_prompt_logprobs(self) -> bool:
        """True while prompt logprobs are still owed (positions scored before a preemption are not redone)."""
        return self.wants_prompt_logprobs and self.prompt_logprobs_done < self.num_prompt_tokens

    def __repr__(self) -> str:
        return (f"Request({self.request_id!r}, status={self.status.name}, tokens={self.num_tokens}, "
                f"computed={self.num_computed_tokens}, blocks={len(self.block_ids)})")
