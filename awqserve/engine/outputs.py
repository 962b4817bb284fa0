"""What the engine hands back per request, in vLLM's shape (`RequestOutput.outputs[i]`)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenLogprob:
    """One position's logprob record: the chosen token and the top alternatives (id → logprob)."""

    token_id: int
    logprob: float
    top: dict[int, float] = field(default_factory=dict)


@dataclass
class CompletionOutput:
    """State of one of a request's `n` samples.

    In incremental (streaming) outputs `text_delta` / `token_ids_delta` / `logprobs_delta` hold only
    what is new since the previous output for this sample; `text` and `token_ids` are cumulative.
    `finish_reason` is None while running, else "stop" (EOS, stop token or stop string), "length",
    or "abort". `stop_reason` is the matched stop string or stop token id, if any.
    """

    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    text_delta: str = ""
    token_ids_delta: list[int] = field(default_factory=list)
    logprobs_delta: list[TokenLogprob] | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestMetrics:
    """Timestamps (time.monotonic()) of one request's life, for metrics and debug headers."""

    arrival_time: float
    scheduled_time: float | None = None  # first time it was scheduled (queue time ends)
    first_token_time: float | None = None
    last_token_time: float | None = None
    finished_time: float | None = None
    num_preemptions: int = 0


@dataclass
class RequestOutput:
    """One update for a request: its prompt, every sample's state, and whether all are finished."""

    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    prompt_logprobs: list[TokenLogprob | None] | None = None  # first entry None (no logprob for token 0)
    metrics: RequestMetrics | None = None
    num_cached_tokens: int = 0
    # Set when the request failed inside the engine (e.g. out of memory in its step); the request
    # is finished and `AsyncEngine.generate` raises it (an `errors.RequestError`).
    error: Exception | None = None
