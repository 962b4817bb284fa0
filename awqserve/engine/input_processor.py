"""Input processing: the engine's one validation of a request, and the n>1 fan-out into `Request`s.

`validate` is pure and thread-safe: the HTTP layer calls it (through `EngineClient.check_request`)
before admitting a request, so a bad request is a 400 before any stream starts; the engine calls it
again in `add_request` (the offline path has no other gate). Limits live here only: context length,
vocabulary, `--max-logprobs`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

from awqserve.engine.outputs import RequestMetrics
from awqserve.engine.request import Request
from awqserve.engine.sampling_params import SamplingParams
from awqserve.errors import ContextLengthError, InvalidRequestError


@dataclass(frozen=True)
class RequestGroup:
    """One API request as the engine runs it: `children[i]` is sample i; all share `metrics`."""

    request_id: str
    prompt_token_ids: list[int]
    children: list[Request]
    metrics: RequestMetrics


@dataclass(frozen=True)
class InputProcessor:
    """Validation and fan-out for one served model. Stateless."""

    max_model_len: int
    vocab_size: int
    max_logprobs: int
    eos_token_ids: tuple[int, ...]

    def validate(self, prompt: Sequence[int], params: SamplingParams, *, strict_length: bool = True) -> None:
        """Raise InvalidRequestError (ContextLengthError for the context) naming the problem.

        `strict_length`: a `max_tokens` that does not fit the context is an error (the API's rule);
        otherwise it is capped to the room left (the offline `LLM` rule, as in vLLM).
        """
        if not prompt:
            raise InvalidRequestError("the prompt must contain at least one token", param="prompt")
        n = len(prompt)
        if n >= self.max_model_len:
            raise ContextLengthError(self.max_model_len, n, None)
        if strict_length and params.max_tokens is not None and n + params.max_tokens > self.max_model_len:
            raise ContextLengthError(self.max_model_len, n, params.max_tokens)
        bad = next((t for t in prompt if not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise InvalidRequestError(f"prompt contains token id {bad}, outside the vocabulary "
                                      f"(0..{self.vocab_size - 1})", param="prompt")
        for name, k in (("logprobs", params.logprobs), ("prompt_logprobs", params.prompt_logprobs)):
            if k is not None and k > self.max_logprobs:
                raise InvalidRequestError(f"{name}={k} exceeds this server's limit of {self.max_logprobs} "
                                          "(--max-logprobs)", param=name)
        bias = next((t for t in params.logit_bias or {} if not 0 <= t < self.vocab_size), None)
        if bias is not None:
            raise InvalidRequestError(f"logit_bias refers to token id {bias}, outside the vocabulary "
                                      f"(0..{self.vocab_size - 1})", param="logit_bias")
        stop = next((t for t in params.stop_token_ids if not 0 <= t < self.vocab_size), None)
        if stop is not None:  # could never be sampled, and ids past int64 break the tensors they go into
            raise InvalidRequestError(f"stop_token_ids contains token id {stop}, outside the vocabulary "
                                      f"(0..{self.vocab_size - 1})", param="stop_token_ids")

    def max_tokens(self, prompt_len: int, params: SamplingParams) -> int:
        """The completion budget: the request's `max_tokens` capped to the room left, or all of it."""
        room = self.max_model_len - prompt_len
        return room if params.max_tokens is None else min(params.max_tokens, room)

    def make_group(self, request_id: str, prompt: list[int], params: SamplingParams,
                   arrival_time: float | None = None) -> RequestGroup:
        """One Request per sample. Samples 1..n-1 fork from sample 0 (prefix sharing, request.py) and
        leave prompt logprobs to it."""
        max_tokens = self.max_tokens(len(prompt), params)
        metrics = RequestMetrics(arrival_time=time.monotonic() if arrival_time is None else arrival_time)
        children: list[Request] = []
        for i in range(params.n):
            children.append(Request(
                request_id if params.n == 1 else f"{request_id}#{i}", prompt, params, max_tokens=max_tokens,
                eos_token_ids=self.eos_token_ids, group_id=request_id, index=i,
                fork_of=children[0] if children else None, metrics=metrics,
                wants_prompt_logprobs=params.prompt_logprobs is not None and i == 0))
        return RequestGroup(request_id, list(prompt), children, metrics)
