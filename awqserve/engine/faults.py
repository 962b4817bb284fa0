"""Failures inside a step: the errors that name their cause, and the test-only fault injector.

A step can fail for one request (its seed does not fit a generator, its logits row is NaN) or for the
whole batch (the forward raised, ran out of memory). The first kind is isolated where it happens (the
sampler, `Sampler.sample_rows`); the second by `LLMEngine` re-running the batch's requests one by one,
so only the requests that fail alone fail. Either way a failed request ends with a `RequestError`
whose `kind` is its failure reason (`awqserve:request_failures_total{reason}`).

Fault injection is for the stress tests and off in production: `FaultInjector.from_env` returns None
unless AWQSERVE_FAULT_INJECT=1 was set when the engine was built. When on, a request whose prompt
text contains a marker fails on purpose: `__fault_exception__` (its forward raises),
`__fault_oom__` (its forward raises torch.OutOfMemoryError), `__fault_nan__` (its logits row is NaN).
"""
from __future__ import annotations

import os
from typing import Any

import torch

from awqserve.errors import RequestError

FAULT_ENV = "AWQSERVE_FAULT_INJECT"
MARKERS = {"__fault_exception__": "exception", "__fault_oom__": "oom", "__fault_nan__": "nan"}


def step_error(exc: BaseException, num_tokens: int) -> RequestError:
    """What a request learns when its forward failed: 503 for out-of-memory, else 500 naming the error."""
    if isinstance(exc, RequestError):
        return exc
    if isinstance(exc, torch.OutOfMemoryError):
        return RequestError(f"out of memory while running a batch of {num_tokens} tokens; retry later, "
                            "or lower --max-num-batched-tokens / --max-num-seqs", status=503, kind="out_of_memory")
    return RequestError(f"engine error: {type(exc).__name__}: {exc}", status=500, kind="internal_error")


def sampling_error(exc: BaseException) -> RequestError:
    return RequestError(f"sampling failed for this request: {type(exc).__name__}: {exc}", status=500,
                        kind="sampling_error")


def nan_error() -> RequestError:
    return RequestError("the model produced non-finite logits (NaN or Inf) for this request; it was stopped",
                        status=500, kind="nan_logits")


class FaultInjector:
    """Marks requests by their prompt text at add time; fails them in the runner. Engine thread only.

    Keeps one entry per *marked* request id (test traffic only), so it needs no retiring."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._marked: dict[str, str] = {}

    @classmethod
    def from_env(cls, tokenizer: Any) -> "FaultInjector | None":
        """An injector when AWQSERVE_FAULT_INJECT=1 (read once, at engine build), else None."""
        return cls(tokenizer) if os.environ.get(FAULT_ENV) == "1" else None

    def on_add(self, request_id: str, prompt_token_ids: list[int]) -> None:
        text = self._tokenizer.decode(prompt_token_ids)
        for marker, kind in MARKERS.items():
            if marker in text:
                self._marked[request_id] = kind

    def kind(self, group_id: str) -> str | None:
        return self._marked.get(group_id)

    def before_forward(self, group_ids: list[str]) -> None:
        """Raise as the forward of a batch holding a marked request would."""
        kinds = {self._marked.get(g) for g in group_ids}
        if "oom" in kinds:
            raise torch.OutOfMemoryError("injected fault: simulated CUDA out of memory")
        if "exception" in kinds:
            raise RuntimeError("injected fault: exception in the forward")

    def corrupt_logits(self, logits: torch.Tensor, group_ids: list[str]) -> None:
        """NaN the rows of requests marked `nan` (row i belongs to group_ids[i])."""
        for i, g in enumerate(group_ids):
            if self._marked.get(g) == "nan":
                logits[i] = float("nan")
