"""Running one API request on the engine: one engine request per prompt, merged into one output stream.

`Generation.outputs()` is the only place that talks to `engine.generate`. Leaving it for any reason
(error, client disconnect → task cancelled, `--request-timeout`, shutdown) aborts every engine request
that has not finished, so KV blocks are freed on the engine's next step.
"""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncGenerator, Awaitable, TypeVar

from awqserve.engine.outputs import RequestOutput
from awqserve.engine.sampling_params import SamplingParams
from awqserve.entrypoints.openai.errors import APIError
from awqserve.errors import EngineDeadError, InvalidRequestError, RequestError

if TYPE_CHECKING:
    from awqserve.entrypoints.openai.state import AppState

logger = logging.getLogger("awqserve.server")
T = TypeVar("T")

_DONE = object()
_OOM_HINT = ("The server ran out of memory while running this batch; only the requests in that step failed. "
             "Retry shortly, or lower max_tokens / shorten the prompt / use fewer parallel requests (n).")


@dataclass
class RequestContext:
    """Per-HTTP-request facts, set by the middleware (scope['state']['ctx'])."""

    request_id: str
    client: str | None  # rate-limit key (None when rate limits are off)
    debug: bool
    arrival: float = field(default_factory=time.monotonic)


@dataclass
class Timing:
    """Queue time, time to first token and decode speed, from engine metrics when given, else observed."""

    arrival: float
    queue_s: float | None = None
    first_token: float | None = None
    last_token: float | None = None
    tokens: int = 0
    end: float | None = None

    def observe(self, out: RequestOutput, new_tokens: int, now: float) -> None:
        m = out.metrics
        if m is not None and m.scheduled_time is not None:
            q = max(0.0, m.scheduled_time - m.arrival_time)
            self.queue_s = q if self.queue_s is None else max(self.queue_s, q)
        if new_tokens:
            self.tokens += new_tokens
            self.first_token = self.first_token or now
            self.last_token = now
        if out.finished:
            self.end = now

    def figures(self) -> dict[str, float | None]:
        decode = None
        if self.first_token is not None and self.last_token is not None and self.last_token > self.first_token:
            decode = round((self.tokens - 1) / (self.last_token - self.first_token), 2)
        ttft = None if self.first_token is None else round((self.first_token - self.arrival) * 1000, 2)
        e2e = round(((self.end or time.monotonic()) - self.arrival) * 1000, 2)
        queue = None if self.queue_s is None else round(self.queue_s * 1000, 2)
        return {"queue_ms": queue, "ttft_ms": ttft, "decode_tokens_per_s": decode, "e2e_ms": e2e}

    def headers(self) -> dict[str, str]:
        names = {"queue_ms": "x-awqserve-queue-ms", "ttft_ms": "x-awqserve-ttft-ms",
                 "decode_tokens_per_s": "x-awqserve-decode-tokens-per-s", "e2e_ms": "x-awqserve-e2e-ms"}
        return {names[k]: str(v) for k, v in self.figures().items() if v is not None}


def translate_engine_error(err: BaseException) -> APIError:
    if isinstance(err, APIError):
        return err
    if isinstance(err, EngineDeadError):
        return APIError(503, f"The engine has stopped: {err}", code="engine_dead", retry_after=30)
    if isinstance(err, InvalidRequestError):
        return APIError(400, str(err), param=err.param, code=err.code)
    if isinstance(err, RequestError):
        if err.status == 503 or "memory" in err.kind:
            return APIError(503, f"{err} {_OOM_HINT}", code=err.kind, retry_after=2)
        return APIError(err.status, str(err), code=err.kind)
    if isinstance(err, ValueError):
        return APIError(400, str(err), code="invalid_value")
    logger.error("engine request failed", exc_info=err)
    return APIError(500, f"Internal error while generating: {type(err).__name__}: {err}", code="internal_error")


class Generation:
    """The engine requests of one API request. Use `async with aclosing(gen.outputs())`."""

    def __init__(self, state: AppState, ctx: RequestContext, base_id: str, prompts: list[list[int]],
                 params: list[SamplingParams]) -> None:
        self.state, self.ctx, self.prompts, self.params = state, ctx, prompts, params
        self.rids = [base_id] if len(prompts) == 1 else [f"{base_id}-{i}" for i in range(len(prompts))]
        self.timing = Timing(ctx.arrival)
        # Queue places from admission to hand-over (state.Reservation); released on hand-over, or when
        # this object is collected without having run (a stream whose client left before it started).
        self._seqs = [p.n for p in params]
        self._reservation = state.reserve(sum(self._seqs))
        weakref.finalize(self, self._reservation.release)
        self._queue: asyncio.Queue[tuple[int, RequestOutput | None, BaseException | object | None]] = asyncio.Queue()
        self._completion_tokens: dict[int, int] = {}

    @property
    def completion_tokens(self) -> int:
        return sum(self._completion_tokens.values())

    def _abort_from_outside(self, message: str) -> None:
        self._queue.put_nowait((-1, None, APIError(503, message, code="shutting_down", retry_after=5)))

    async def _pump(self, idx: int) -> None:
        try:
            gen = self.state.require_engine().generate(self.prompts[idx], self.params[idx], self.rids[idx])
            # no await between this release and the hand-over inside generate()'s first step
            self._reservation.release(self._seqs[idx])
            async for out in gen:
                self._queue.put_nowait((idx, out, None))
            self._queue.put_nowait((idx, None, _DONE))
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which decides the status
            self._queue.put_nowait((idx, None, e))

    async def outputs(self) -> AsyncGenerator[tuple[int, RequestOutput], None]:
        """Yields (prompt index, incremental RequestOutput) until every engine request has finished."""
        state, n = self.state, len(self.rids)
        token = state.tracker.begin(n, self._abort_from_outside)
        tasks = [asyncio.create_task(self._pump(i)) for i in range(n)]
        timeout = state.config.request_timeout
        timer = None
        if timeout is not None:
            timer = asyncio.get_running_loop().call_later(timeout, self._queue.put_nowait, (-1, None, TimeoutError()))
        done: set[int] = set()
        try:
            while len(done) < n:
                idx, out, err = await self._queue.get()
                if err is _DONE:
                    done.add(idx)
                    continue
                if isinstance(err, TimeoutError):
                    self._count_abort("timeout")
                    raise APIError(504, f"The request did not finish within --request-timeout ({timeout:g}s) and "
                                   "was aborted. Lower max_tokens or retry when the server is less busy.",
                                   code="request_timeout")
                if isinstance(err, BaseException):
                    raise translate_engine_error(err)
                assert out is not None
                self._observe(idx, out)
                yield idx, out
        except asyncio.CancelledError:
            self._count_abort("client_disconnect")
            raise
        finally:
            if timer is not None:
                timer.cancel()
            self._reservation.release()  # prompts never handed over (engine gone, cancelled first)
            self._cleanup(tasks, done)
            state.tracker.end(token, n)
            if state.limiter is not None and self.ctx.client is not None:
                state.limiter.debit_tokens(self.ctx.client, self.completion_tokens)

    def _observe(self, idx: int, out: RequestOutput) -> None:
        new = sum(len(o.token_ids_delta) for o in out.outputs)
        self._completion_tokens[idx] = self._completion_tokens.get(idx, 0) + new
        self.timing.observe(out, new, time.monotonic())

    def _cleanup(self, tasks: list[asyncio.Task[None]], done: set[int]) -> None:
        for i, task in enumerate(tasks):
            if not task.done():
                task.cancel()  # cancelling the engine's iterator aborts the request
            if i not in done and self.state.engine is not None:
                try:
                    self.state.engine.abort(self.rids[i])
                except Exception:  # noqa: BLE001 - abort of an already-finished request is harmless
                    logger.debug("abort(%s) failed", self.rids[i], exc_info=True)

    def _count_abort(self, reason: str) -> None:
        if self.state.metrics is not None:
            self.state.metrics.aborted(reason)


class ClientDisconnected(Exception):
    """The client went away before the (non-streaming) response was ready."""


async def until_disconnect(receive: Any, work: Awaitable[T]) -> T:
    """Await `work` unless the client disconnects first; then cancel it (which aborts its requests)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_disconnect(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()  # also when we ourselves are cancelled: never leave the work running
    if not task.done():
        await asyncio.wait({task})  # let its cleanup (engine aborts) run before we answer
        raise ClientDisconnected()
    return task.result()


async def wait_disconnect(receive: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
