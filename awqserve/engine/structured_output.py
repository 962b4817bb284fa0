"""Structured outputs in the engine: compile a request's grammar, give each sample a matcher, mask logits.

Lifecycle of a constrained request (`SamplingParams.grammar` set):
1. `compile(spec)` — thread-safe, returns a Future. The server calls it before admitting the request
   (`EngineClient.compile_grammar`), so a bad schema is a 400 and the compile never runs on the engine
   thread; the compiled grammar is cached by `spec.key` (GrammarCompiler, LRU).
2. `matcher(spec)` at `add_request`: the cached grammar's per-sample matcher (one per sample of n>1).
   A spec evicted from the cache in between is compiled again here, on the engine thread (rare).
3. Each step: `apply(logits, requests)` fills the constrained rows' token masks (in parallel, on
   llguidance's pool) and sets disallowed logits to -inf — after the sampler took the raw logprobs,
   so logprobs report the model's own distribution (as vLLM's default); then the scheduler advances
   each matcher with the sampled token (`Scheduler.update_from_output`) and stops a request whose
   grammar is complete (`check_stop`).

The grammar backend (llguidance over the model's tokenizer) is built lazily, on the first grammar,
on the compile thread: 0.2-2 s once per model, never at start-up for servers that get no such request.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from typing import Any, Sequence

import torch

from awqserve.engine.request import Request
from awqserve.structured import (CompiledGrammar, GrammarBackend, GrammarCompiler, GrammarMatcher, GrammarSpec,
                                 allocate_bitmask, apply_bitmask, build_backend)

log = logging.getLogger(__name__)


class StructuredOutputManager:
    """One per engine. `compile` may be called from any thread; everything else from the engine thread."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_token_ids: Sequence[int]) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._eos = tuple(eos_token_ids)
        self._lock = threading.Lock()
        self._compiler: GrammarCompiler | None = None
        self._bitmask: torch.Tensor | None = None

    def _get_compiler(self) -> GrammarCompiler:
        with self._lock:
            if self._compiler is None:
                self._compiler = GrammarCompiler(_LazyBackend(self._tokenizer, self._vocab_size, self._eos))
            return self._compiler

    def compile(self, spec: GrammarSpec) -> Future[CompiledGrammar]:
        """The compiled grammar, eventually; the Future's exception is a GrammarError for a bad spec."""
        return self._get_compiler().compile(spec)

    def prewarm(self) -> None:
        """Build the backend (the tokenizer's token trie: 0.2-2 s) on the compile thread now, so the
        first constrained request pays only its own compile. Returns at once; a failure is logged
        (the first constrained request then reports it as its own error)."""
        if getattr(self._tokenizer, "backend_tokenizer", None) is None:
            return  # not a Hugging Face fast tokenizer (test stand-ins): nothing to build ahead
        future = self.compile(GrammarSpec.json_object())
        future.add_done_callback(_log_prewarm_failure)

    def matcher(self, spec: GrammarSpec) -> GrammarMatcher:
        """A fresh matcher for one sample (compiles now if the spec is not cached; raises GrammarError)."""
        return self.compile(spec).result().matcher()

    def apply(self, logits: torch.Tensor, requests: list[Request]) -> None:
        """Mask each constrained row of `logits` [B, V] (row i is requests[i]) to its grammar, in place."""
        rows: list[int] = []
        matchers: list[GrammarMatcher] = []
        for i, r in enumerate(requests):
            if r.grammar is not None:
                rows.append(i)
                matchers.append(r.grammar)
        if not rows:
            return
        compiler = self._get_compiler()
        bitmask = self._mask_buffer(len(requests))
        compiler.backend.fill_bitmasks(matchers, bitmask, rows)
        # every row constrained (the common case): no gather/scatter of logits rows (3.7x faster at 16 rows)
        apply_bitmask(logits, bitmask[: len(requests)], None if len(rows) == len(requests) else rows)

    def _mask_buffer(self, batch: int) -> torch.Tensor:
        if self._bitmask is None or self._bitmask.shape[0] < batch:
            self._bitmask = allocate_bitmask(max(batch, 16), self._vocab_size)
        return self._bitmask

    def close(self) -> None:
        with self._lock:
            if self._compiler is not None:
                self._compiler.close()


def _log_prewarm_failure(future: Future[CompiledGrammar]) -> None:
    if future.exception() is not None:
        log.warning("structured outputs are unavailable for this tokenizer: %s", future.exception())


class _LazyBackend(GrammarBackend):
    """The real backend, built on first use (on the compile thread, which calls `compile` first)."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos: tuple[int, ...]) -> None:
        self._args = (tokenizer, vocab_size, eos)
        self._backend: GrammarBackend | None = None
        self._lock = threading.Lock()
        self.vocab_size = vocab_size
        self.eos_token_ids = eos

    def _real(self) -> GrammarBackend:
        with self._lock:
            if self._backend is None:
                tokenizer, vocab, eos = self._args
                self._backend = build_backend(tokenizer, vocab, eos)
            return self._backend

    def compile(self, spec: GrammarSpec) -> CompiledGrammar:
        return self._real().compile(spec)

    def fill_bitmasks(self, matchers: Sequence[GrammarMatcher], bitmask: torch.Tensor,
                      rows: Sequence[int] | None = None) -> None:
        self._real().fill_bitmasks(matchers, bitmask, rows)
