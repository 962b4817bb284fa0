"""Engine counters, read by the HTTP layer for /metrics, /health and headers.

The engine thread owns one `EngineStats` and mutates it; readers take `snapshot()` copies.
Per-request latencies are delivered through `RequestOutput.metrics` of finished requests and
through `StatsListener` callbacks, so the metrics layer never polls per-token state.
"""
from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class EngineStats:
    num_running: int = 0
    num_waiting: int = 0
    kv_usage: float = 0.0  # fraction of KV blocks in use, 0..1
    state_usage: float = 0.0  # fraction of recurrent-state slots in use (hybrid models)
    num_kv_blocks: int = 0
    block_size: int = 0
    kv_cache_bytes: int = 0
    state_cache_bytes: int = 0
    num_state_slots: int = 0
    # monotonically increasing counters
    num_preemptions: int = 0
    prefix_cache_queries: int = 0  # tokens looked up
    prefix_cache_hits: int = 0  # tokens found
    prompt_tokens: int = 0  # prompt tokens computed (prefill work)
    generation_tokens: int = 0
    finished: dict[str, int] = field(default_factory=dict)  # finish_reason -> count
    failures: dict[str, int] = field(default_factory=dict)  # RequestError.kind of failed requests -> count
    num_steps: int = 0
    # exact bookkeeping after the last step (a leak shows as a non-zero value on an idle engine)
    kv_blocks_used: int = 0  # KV blocks referenced by a request (cached-but-free blocks excluded)
    state_slots_used: int = 0
    tracked_requests: int = 0  # API requests the output processor still holds


class StatsListener(Protocol):
    """Called on the engine thread; implementations must be quick and thread-safe."""

    def on_step(self, *, num_prompt_tokens: int, num_generation_tokens: int,
                inter_token_latencies: list[float]) -> None: ...

    def on_request_finished(self, *, finish_reason: str, prompt_tokens: int, generation_tokens: int,
                            queue_time: float, ttft: float | None, prefill_time: float | None,
                            decode_time: float | None, e2e_time: float) -> None: ...


class StatsHolder:
    """Thread-safe holder: the engine updates under the lock, readers copy."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats = EngineStats()
        self.listeners: list[StatsListener] = []

    def update(self, **fields: object) -> None:
        with self._lock:
            for k, v in fields.items():
                setattr(self._stats, k, v)

    def add(self, **deltas: int) -> None:
        with self._lock:
            for k, v in deltas.items():
                setattr(self._stats, k, getattr(self._stats, k) + v)

    def count_finished(self, reason: str) -> None:
        with self._lock:
            self._stats.finished[reason] = self._stats.finished.get(reason, 0) + 1

    def count_failure(self, kind: str) -> None:
        with self._lock:
            self._stats.failures[kind] = self._stats.failures.get(kind, 0) + 1

    def snapshot(self) -> EngineStats:
        with self._lock:
            return copy.deepcopy(self._stats)
