"""`GrammarCompiler`: compiles specs off the caller's thread, cached by `spec.key`.

The engine calls `compile(spec)` when a constrained request arrives and gets a Future at once; it
schedules the request once the Future is done (most are done at once: a cache hit). Compilation
runs on a small thread pool (llguidance releases the GIL while it builds a grammar), so the engine
loop never waits on it.

Invariants:
- one key compiles at most once at a time: concurrent calls with the same key share one Future;
- a successful compile stays cached (LRU, `cache_size` entries) and a later call returns the same
  Future, hence the same `CompiledGrammar` object;
- a `GrammarError` is cached too (its own smaller LRU), so resubmitting a bad schema fails fast;
  any other exception (a bug, out of memory) is not cached, and the next call retries.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from awqserve.engine.omp_threads import serial_torch_here
from awqserve.structured.backend import CompiledGrammar, GrammarBackend
from awqserve.structured.spec import GrammarError, GrammarSpec


@dataclass
class CompilerStats:
    """Counters for metrics: `hits` served from cache (or joined an in-flight compile)."""

    hits: int = 0
    misses: int = 0
    errors: int = 0


class GrammarCompiler:
    """A thread pool of `max_workers` (1-2) compiling for one backend, with a bounded LRU cache."""

    def __init__(self, backend: GrammarBackend, *, max_workers: int = 1, cache_size: int = 256,
                 error_cache_size: int = 64) -> None:
        if not 1 <= max_workers <= 4:
            raise ValueError(f"max_workers must be 1..4, got {max_workers}")
        self.backend = backend
        self.stats = CompilerStats()
        # serial torch in the pool: no second OpenMP team beside the engine's (engine/omp_threads.py)
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="awqserve-grammar",
                                        initializer=serial_torch_here)
        self._lock = threading.Lock()
        self._done: OrderedDict[str, Future[CompiledGrammar]] = OrderedDict()
        self._failed: OrderedDict[str, Future[CompiledGrammar]] = OrderedDict()
        self._pending: dict[str, Future[CompiledGrammar]] = {}
        self._sizes = (cache_size, error_cache_size)

    def compile(self, spec: GrammarSpec) -> Future[CompiledGrammar]:
        """A Future of the compiled grammar; its exception is a `GrammarError` for a bad spec."""
        key = spec.key
        with self._lock:
            cached = self._lookup(key)
            if cached is not None:
                self.stats.hits += 1
                return cached
            self.stats.misses += 1
            future = self._pool.submit(self.backend.compile, spec)
            self._pending[key] = future
        # outside the lock: a callback on an already finished future runs right here
        future.add_done_callback(lambda f: self._finish(key, f))
        return future

    def get(self, spec: GrammarSpec, timeout: float | None = None) -> CompiledGrammar:
        """Blocking convenience for callers off the engine thread (tests, offline tools)."""
        return self.compile(spec).result(timeout)

    def clear(self) -> None:
        """Forget every cached result (compiles in flight finish and are then cached)."""
        with self._lock:
            self._done.clear()
            self._failed.clear()

    def close(self) -> None:
        """Stop the pool; compiles already queued still finish."""
        self._pool.shutdown(wait=False, cancel_futures=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._done)

    def _lookup(self, key: str) -> Future[CompiledGrammar] | None:
        """Caller holds the lock. Refreshes the entry's LRU position."""
        for table in (self._done, self._failed):
            if key in table:
                table.move_to_end(key)
                return table[key]
        return self._pending.get(key)

    def _finish(self, key: str, future: Future[CompiledGrammar]) -> None:
        error = future.exception()
        with self._lock:
            self._pending.pop(key, None)
            if error is None:
                self._insert(self._done, key, future, self._sizes[0])
            elif isinstance(error, GrammarError):
                self.stats.errors += 1
                self._insert(self._failed, key, future, self._sizes[1])

    @staticmethod
    def _insert(table: OrderedDict[str, Future[CompiledGrammar]], key: str,
                future: Future[CompiledGrammar], limit: int) -> None:
        table[key] = future
        table.move_to_end(key)
        while len(table) > limit:
            table.popitem(last=False)
