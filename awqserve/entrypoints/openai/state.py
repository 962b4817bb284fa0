"""Process-wide server state: the engine handle and its boot, readiness, admission and in-flight tracking.

The engine is built and started in the background so the HTTP socket listens while the model loads.
Phases: loading → ready → (draining) ; dead if the engine stops. Admission is decided here so that
every endpoint refuses the same way: 503 while loading/draining/dead or when the waiting queue is
full (with Retry-After), 429 when the client's token budget is spent.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from awqserve.config.engine_config import EngineConfig
from awqserve.engine.protocol import EngineClient, EngineInfo
from awqserve.entrypoints.openai.errors import bad_request, model_not_found, service_unavailable
from awqserve.entrypoints.openai.limits import RateLimiter
from awqserve.entrypoints.openai.responses_store import ResponseStore
from awqserve.entrypoints.openai.runner import RequestContext
from awqserve.entrypoints.openai.server_config import ServerConfig
from awqserve.entrypoints.openai.tokenization import TokenizerView

if TYPE_CHECKING:
    from starlette.requests import Request

    from awqserve.entrypoints.openai.metrics import ServerMetrics

logger = logging.getLogger("awqserve.server")
T = TypeVar("T")

EngineFactory = Callable[[EngineConfig], EngineClient]


def default_engine_factory(config: EngineConfig) -> EngineClient:
    """The real engine: an AsyncEngine that loads the model on its own thread, showing its progress
    as bars when stderr is a terminal, else as log lines."""
    from awqserve.engine.async_engine import AsyncEngine
    from awqserve.engine.progress_render import console_progress

    return AsyncEngine(config, progress=console_progress())


async def in_daemon_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run `fn` in a daemon thread: a model still loading must not keep the process alive at exit."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def deliver(callback: Callable[[], Any]) -> None:
        try:
            loop.call_soon_threadsafe(callback)
        except RuntimeError:  # the loop is closed: the server exited while this was running
            pass

    def target() -> None:
        try:
            result = fn(*args)
        except BaseException as e:  # noqa: BLE001 - delivered to the awaiting coroutine
            # bind now: Python unbinds `e` when the except block ends, before the loop runs the callback
            deliver(functools.partial(_fail, fut, e))
        else:
            deliver(functools.partial(_succeed, fut, result))

    threading.Thread(target=target, name=f"awqserve-{getattr(fn, '__name__', 'boot')}", daemon=True).start()
    return await fut


def _fail(fut: asyncio.Future[Any], err: BaseException) -> None:
    if not fut.done():
        fut.set_exception(err)


def _succeed(fut: asyncio.Future[T], result: T) -> None:
    if not fut.done():
        fut.set_result(result)


class Reservation:
    """Queue places (sequences) held from admission until the engine has the requests.

    Admission and the hand-over to the engine are separated by awaits (the stream's headers go out
    first); without a reservation every request arriving in that gap passes the same check."""

    def __init__(self, tracker: "RequestTracker", seqs: int) -> None:
        self._tracker = tracker
        self.held = seqs
        tracker.reserved_seqs += seqs

    def release(self, seqs: int | None = None) -> None:
        """Give back `seqs` places (all by default): the engine holds them now, or never will."""
        n = self.held if seqs is None else min(seqs, self.held)
        self.held -= n
        self._tracker.reserved_seqs -= n


@dataclass
class RequestTracker:
    """Counts what the server has handed to the engine; `aborters` lets shutdown cut streams short."""

    api_requests: int = 0  # HTTP requests currently generating
    engine_requests: int = 0  # engine requests (one per prompt) currently in flight
    reserved_seqs: int = 0  # admitted sequences not yet handed to the engine (`Reservation`)
    aborters: dict[int, Callable[[str], None]] = field(default_factory=dict)
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    def begin(self, n_engine: int, aborter: Callable[[str], None]) -> int:
        self.api_requests += 1
        self.engine_requests += n_engine
        self.idle.clear()
        token = id(aborter)
        self.aborters[token] = aborter
        return token

    def end(self, token: int, n_engine: int) -> None:
        self.api_requests -= 1
        self.engine_requests -= n_engine
        self.aborters.pop(token, None)
        if self.api_requests == 0:
            self.idle.set()


class AppState:
    """Everything the handlers share. One per app; the engine arrives asynchronously via `boot()`."""

    def __init__(self, config: ServerConfig, engine_config: EngineConfig,
                 engine_factory: EngineFactory | None = None) -> None:
        self.config = config
        self.engine_config = engine_config
        self.engine_factory: EngineFactory = engine_factory or default_engine_factory
        self.engine: EngineClient | None = None
        self.boot_error: BaseException | None = None
        self.started_at = time.monotonic()
        self.started_wall = time.time()
        self.draining = False
        self.tracker = RequestTracker()
        self.limiter = RateLimiter(config.rate_limit_rpm, config.rate_limit_tpm) if config.rate_limited else None
        self.metrics: ServerMetrics | None = None  # set by the app unless metrics are disabled
        self.tokenizer: TokenizerView | None = None
        self.responses = ResponseStore(config.responses_store_size)  # for previous_response_id
        self.on_fatal: Callable[[int], None] | None = None  # set by the server runner: exit with a code
        self._names: tuple[str, ...] = config.served_model_names
        # Test hook, read once: /health adds the engine's exact bookkeeping (stress tests assert leaks).
        self.debug_engine = os.environ.get("AWQSERVE_DEBUG_ENGINE") == "1"

    # ---- boot ----

    async def boot(self) -> None:
        """Build and start the engine off the event loop; on load failure report and ask to exit(1)."""
        try:
            engine = await in_daemon_thread(self.engine_factory, self.engine_config)
            self.engine = engine
            await in_daemon_thread(engine.start)
            while not (engine.ready or engine.dead):
                await asyncio.sleep(0.05)
            if engine.dead:
                raise engine.error or RuntimeError("engine stopped while loading")
            self._on_ready(engine)
        except Exception as e:  # noqa: BLE001 - any load failure ends the process with a clear message
            self.boot_error = e
            logger.error("model failed to load: %s", e)
            if self.on_fatal is not None:
                self.on_fatal(1)

    def _on_ready(self, engine: EngineClient) -> None:
        info = engine.info
        assert info is not None, "a ready engine knows its model"
        self.tokenizer = TokenizerView(engine.tokenizer, self.config.chat_template)
        if not self._names:
            self._names = (info.model_name,)
        if self.metrics is not None:
            self.metrics.attach(engine, self.model_name)
        q = info.quant_info
        logger.info("model %s ready: max_model_len=%d, quantization=%s", self.model_name,
                    info.max_model_len, q.as_dict() if q is not None else None)

    @property
    def info(self) -> EngineInfo:
        """The served model's facts; only valid once the engine is ready (`require_engine`)."""
        info = self.engine.info if self.engine is not None else None
        if info is None:
            raise service_unavailable("The model is still loading; retry shortly.", "model_loading", 5)
        return info

    # ---- phase ----

    @property
    def phase(self) -> str:
        if self.boot_error is not None or (self.engine is not None and self.engine.dead):
            return "dead"
        if self.engine is None or not self.engine.ready or self.tokenizer is None:
            return "loading"
        return "draining" if self.draining else "ready"

    def loading_progress(self) -> dict[str, Any]:
        """Where start-up is (`/health` while loading): phase, progress 0..1 of it, ETA, figures."""
        if self.engine is None:  # the engine object itself is still being created
            return {"phase": "starting", "progress": 0.0}
        return self.engine.progress.as_dict()

    @property
    def model_name(self) -> str:
        return self._names[0] if self._names else "unknown"

    @property
    def served_names(self) -> tuple[str, ...]:
        return self._names

    def dead_reason(self) -> str:
        err = self.boot_error or (self.engine.error if self.engine is not None else None)
        return f"{type(err).__name__}: {err}" if err is not None else "engine stopped"

    def require_engine(self) -> EngineClient:
        """The ready engine, or 503 with why not (loading / dead)."""
        phase = self.phase
        if phase == "loading" or self.engine is None:
            raise service_unavailable("The model is still loading; retry shortly.", "model_loading", 5)
        if phase == "dead":
            raise service_unavailable(f"The engine has stopped ({self.dead_reason()}); "
                                      "the server must be restarted.", "engine_dead", 30)
        return self.engine

    def require_tokenizer(self) -> TokenizerView:
        self.require_engine()
        assert self.tokenizer is not None  # set before the phase turns ready
        return self.tokenizer

    def resolve_model(self, requested: str | None) -> str:
        if requested is None or requested in self._names:
            return requested or self.model_name
        raise model_not_found(requested, list(self._names))

    # ---- load figures ----

    def queue_depth(self) -> int:
        """Sequences admitted and not yet running (n > 1 counts n): reserved at admission, handed over,
        or in the engine's waiting queue. Never below the `vllm:num_requests_waiting` gauge, so the
        bound checked against it holds for the gauge too (preempted requests return to the queue
        and may exceed it: they were admitted already)."""
        if self.engine is None or not self.engine.ready:
            return 0
        return self.tracker.reserved_seqs + int(self.engine.num_waiting())

    def kv_usage(self) -> float:
        if self.engine is None or not self.engine.ready:
            return 0.0
        return float(self.engine.stats.snapshot().kv_usage)

    def queue_full(self) -> bool:
        return self.queue_depth() >= self.config.max_num_queued_reqs

    # ---- admission ----

    def admit(self, client: str | None, prompt_tokens: int, seqs: int = 1, param: str = "n") -> None:
        """Last gate before the engine: draining → 503, more sequences than the queue can ever hold →
        400 naming `param` (a retry could never succeed), no room now → 503, then charge prompt tokens.
        The place itself is taken by `reserve` (the `Generation`), with no await between."""
        if self.draining:
            self.count_reject("draining")
            raise service_unavailable("The server is shutting down and not accepting new requests.",
                                      "shutting_down", 5)
        limit = self.config.max_num_queued_reqs
        if seqs > limit:
            raise bad_request(f"This request needs {seqs} sequences (prompts x n) but this server queues at most "
                              f"{limit} (--max-num-queued-reqs); send fewer prompts or a smaller n.",
                              param=param, code="invalid_value")
        self._check_room(seqs)
        if self.limiter is not None and client is not None:
            self.limiter.debit_tokens(client, prompt_tokens)

    def reserve(self, seqs: int) -> Reservation:
        """Take `seqs` queue places now (503 `queue_full` if they do not fit); release them when the
        engine has the requests. Synchronous: check and take cannot be split by another request."""
        self._check_room(seqs)
        return Reservation(self.tracker, seqs)

    def _check_room(self, seqs: int) -> None:
        if self.queue_depth() + seqs > self.config.max_num_queued_reqs:
            self.count_reject("queue_full")
            raise service_unavailable(
                f"The server is overloaded: the waiting queue is full ({self.config.max_num_queued_reqs} "
                "requests). Retry later or lower your request rate.", "queue_full", 1)

    def count_reject(self, reason: str) -> None:
        """Count a refusal at the edge (queue_full, draining, invalid_api_key, rate_limit_exceeded)."""
        if self.metrics is not None:
            self.metrics.rejected(reason)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.awqserve
    return state


def get_ctx(request: Request) -> RequestContext:
    ctx: RequestContext | None = request.scope.get("state", {}).get("ctx")
    if ctx is None:  # only when the app runs without its middleware (unit tests of a single route)
        ctx = RequestContext(request_id=uuid.uuid4().hex, client=None, debug=False)
    return ctx
