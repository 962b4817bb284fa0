"""AsyncEngine: one engine thread owns the model; asyncio callers stream from per-request queues.

The thread loads the model itself (so an HTTP server can listen and answer /health while loading,
naming the start-up phase from `progress`), then loops: take new requests and aborts handed over
under a condition variable, run one `LLMEngine.step()`, and deliver each output to its request's
asyncio.Queue with `loop.call_soon_threadsafe`. With no work it sleeps on the condition variable
(no busy loop).

Failure model: a failing step fails only its requests (their stream raises `RequestError`); if
the thread itself dies (or the model fails to load), `dead` becomes True and every pending and
future request raises `EngineDeadError`.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Sequence, Union

from awqserve.config.engine_config import EngineConfig
from awqserve.engine.llm_engine import LLMEngine
from awqserve.engine.outputs import RequestOutput
from awqserve.engine.progress import LoadProgress, ProgressSnapshot
from awqserve.engine.progress_render import log_progress
from awqserve.engine.protocol import EngineInfo
from awqserve.engine.sampling_params import SamplingParams
from awqserve.engine.stats import StatsHolder
from awqserve.errors import EngineDeadError, InvalidRequestError, RequestError
from awqserve.structured.backend import CompiledGrammar
from awqserve.structured.spec import GrammarSpec

log = logging.getLogger(__name__)
LLMEngineFactory = Callable[[EngineConfig, StatsHolder], LLMEngine]
_Item = Union[RequestOutput, BaseException]  # what a request's queue carries


@dataclass
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: "asyncio.Queue[_Item]"


def _put_all(items: list[tuple["asyncio.Queue[_Item]", _Item]]) -> None:
    for queue, item in items:
        queue.put_nowait(item)


def _build(config: EngineConfig, stats: StatsHolder, progress: LoadProgress | None = None) -> LLMEngine:
    return LLMEngine.from_config(config, stats=stats, progress=progress)


class AsyncEngine:
    """Thread-safe front of an LLMEngine (an `EngineClient`). Create, `start()`, then `generate()`
    from any event loop. `progress` (default: log lines) follows the load; a custom
    `engine_factory` (tests) gets no progress of its own, so only "starting" → "ready" is seen."""

    def __init__(self, config: EngineConfig, *, engine_factory: LLMEngineFactory | None = None,
                 progress: LoadProgress | None = None) -> None:
        self.config = config
        self._stats = StatsHolder()
        self._progress = progress or log_progress()
        self._factory: LLMEngineFactory = engine_factory or functools.partial(_build, progress=self._progress)
        self._engine: LLMEngine | None = None
        self._cond = threading.Condition()
        self._new: list[tuple[str, list[int], SamplingParams, float]] = []
        self._aborts: list[str] = []
        self._streams: dict[str, _Stream] = {}
        self._thread: threading.Thread | None = None
        self._ready = False
        self._dead = False
        self._stopping = False
        self._error: BaseException | None = None
        # Sequences (n > 1 counts n) not yet running, in three places, each written under `_cond`:
        # handed over (`_new`), taken by the engine thread this iteration, waiting in the engine as of
        # the last step. A request is in at least one of them until a step has scheduled it.
        self._new_seqs = 0
        self._taken_seqs = 0
        self._engine_waiting = 0

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the engine thread (it loads the model); returns at once. Idempotent."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="awqserve-engine", daemon=True)
            self._thread.start()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the thread after its current step; pending requests get EngineDeadError."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._fail_all(EngineDeadError("the engine was shut down"))
        if self._engine is not None:
            self._engine.structured.close()

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the model is loaded; raises EngineDeadError if loading failed, TimeoutError on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready:
            if self._dead:
                raise EngineDeadError(f"the engine failed to start: {self._error}")
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("the engine is not ready yet")
            await asyncio.sleep(0.05)

    # -- read-only state -------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._ready and not self._dead

    @property
    def dead(self) -> bool:
        return self._dead

    @property
    def error(self) -> BaseException | None:
        return self._error

    @property
    def stats(self) -> StatsHolder:
        return self._stats

    @property
    def progress(self) -> ProgressSnapshot:
        return self._progress.snapshot()

    @property
    def engine(self) -> LLMEngine | None:
        """The underlying engine once loaded (read-only use from other threads)."""
        return self._engine

    @property
    def info(self) -> EngineInfo | None:
        return self._engine.info if self._engine else None

    @property
    def tokenizer(self) -> Any:
        return self._engine.tokenizer if self._engine else None

    def compile_grammar(self, spec: GrammarSpec) -> Future[CompiledGrammar]:
        if self._engine is None:
            raise EngineDeadError("the engine is not ready")
        return self._engine.structured.compile(spec)

    def check_request(self, prompt_token_ids: Sequence[int], params: SamplingParams) -> None:
        """The engine's validation with the API's strict context rule; raises InvalidRequestError."""
        if self._engine is None:
            raise EngineDeadError("the engine is not ready")
        self._engine.inputs.validate(prompt_token_ids, params, strict_length=True)

    @property
    def num_streams(self) -> int:
        """Requests with a live consumer (0 when idle; a leak otherwise)."""
        with self._cond:
            return len(self._streams)

    def num_waiting(self) -> int:
        """Sequences not yet running (n > 1 counts n): handed over, being added, or in the engine's
        waiting queue. Never below the engine's own count (the `vllm:num_requests_waiting` gauge);
        above it for at most one step while new requests are being scheduled."""
        with self._cond:
            return self._new_seqs + self._taken_seqs + self._engine_waiting

    # -- requests --------------------------------------------------------------------------------
    async def generate(self, prompt_token_ids: list[int], params: SamplingParams,
                       request_id: str) -> AsyncIterator[RequestOutput]:
        """Stream a request's outputs (each holds deltas and cumulative state) until finished.

        Raises EngineDeadError if the engine is or becomes dead, RequestError if the request
        fails inside the engine (status 400 for an invalid prompt, 503 out of memory, else 500),
        ValueError for a request id already in use. Closing or cancelling the iterator aborts
        the request.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        with self._cond:
            if self._dead or self._stopping:
                raise EngineDeadError(f"the engine is not running: {self._error or 'shut down'}")
            if request_id in self._streams:
                raise ValueError(f"request id {request_id!r} is already in use")
            self._streams[request_id] = _Stream(loop, queue)
            self._new.append((request_id, list(prompt_token_ids), params, time.monotonic()))
            self._new_seqs += params.n
            self._cond.notify()
        finished = False
        try:
            while not finished:
                item = await queue.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                if item.error is not None:
                    finished = True
                    raise item.error
                finished = item.finished
                yield item
        finally:
            with self._cond:
                self._streams.pop(request_id, None)
            if not finished:
                self.abort(request_id)

    def abort(self, request_id: str) -> None:
        """Abort a request (no-op if unknown); its blocks are freed within one engine step."""
        with self._cond:
            self._aborts.append(request_id)
            self._cond.notify()

    # -- the engine thread -----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._engine = self._factory(self.config, self._stats)
            self._progress.ready()  # no-op when the factory already said so
            self._engine.structured.prewarm()  # the grammar backend, off this thread, before any request
            self._ready = True
            self._loop(self._engine)
        except BaseException as e:  # noqa: BLE001 - the thread must report any death
            self._progress.fail(f"{type(e).__name__}: {e}")  # no-op once ready
            log.exception("engine thread died")
            self._error = e
            self._fail_all(EngineDeadError(f"the engine stopped: {type(e).__name__}: {e}"))

    def _loop(self, engine: LLMEngine) -> None:
        while True:
            with self._cond:
                while not (self._new or self._aborts or self._stopping or engine.has_unfinished()):
                    self._cond.wait()
                if self._stopping:
                    return
                new, self._new = self._new, []
                self._taken_seqs, self._new_seqs = self._new_seqs, 0
                aborts, self._aborts = self._aborts, []
            for rid, prompt, params, arrival in new:
                try:
                    engine.add_request(rid, prompt, params, arrival_time=arrival)
                except InvalidRequestError as e:
                    self._deliver([(rid, e)])
                except ValueError as e:  # a duplicate request id
                    self._deliver([(rid, RequestError(str(e), status=400, kind="invalid_request_error"))])
            for rid in aborts:
                engine.abort(rid)
            outputs = engine.step() if engine.has_unfinished() else []
            with self._cond:
                self._engine_waiting, self._taken_seqs = engine.num_waiting, 0
            self._deliver([(o.request_id, o) for o in outputs])

    def _deliver(self, items: list[tuple[str, _Item]]) -> None:
        """Hand items to their streams' loops, one thread-safe call per loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[_Item], _Item]]] = {}
        with self._cond:
            for rid, item in items:
                stream = self._streams.get(rid)
                if stream is None:
                    continue  # the consumer is gone (cancelled); nothing to deliver
                if isinstance(item, BaseException) or item.finished:
                    del self._streams[rid]
                by_loop.setdefault(stream.loop, []).append((stream.queue, item))
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, batch)
            except RuntimeError:  # the consumer's loop is closed
                pass

    def _fail_all(self, err: EngineDeadError) -> None:
        with self._cond:
            self._dead = True
            self._cond.notify_all()
            ids = list(self._streams)
        self._deliver([(rid, err) for rid in ids])
