"""What every generating endpoint shares: parse → check with the engine → admit → run → JSON or SSE.

Endpoints (chat, completions, responses) differ only in how they turn a request into prompts and
engine outputs into response objects. The edge validates the request *shape* (pydantic, 422); the
engine validates what it can serve (`EngineClient.check_request`: context, vocabulary, logprob
limits) and this module maps its errors onto the endpoint's field names (400).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, AsyncGenerator, AsyncIterator, Awaitable, Callable, Generic, Mapping, Sequence, TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from awqserve.engine.protocol import EngineClient, EngineInfo
from awqserve.engine.sampling_params import SamplingParams
from awqserve.entrypoints.openai.errors import APIError, bad_request, context_length_exceeded
from awqserve.entrypoints.openai.protocol import SamplingRequest, parse_body, reject_unsupported
from awqserve.entrypoints.openai.runner import ClientDisconnected, RequestContext, Timing, until_disconnect
from awqserve.entrypoints.openai.sse import SSEResponse, finish_stream
from awqserve.entrypoints.openai.state import AppState, get_ctx, get_state
from awqserve.entrypoints.openai.tokenization import TokenizerView
from awqserve.errors import ContextLengthError, InvalidRequestError
from awqserve.version import __version__

FINGERPRINT = f"fp_awqserve_{__version__}"
logger = logging.getLogger("awqserve.server")
R = TypeVar("R", bound=BaseModel)


@dataclass
class Prepared(Generic[R]):
    """A parsed request for a ready engine, with what its endpoint needs around it."""

    state: AppState
    ctx: RequestContext
    req: R
    engine: EngineClient
    info: EngineInfo
    tok: TokenizerView
    model: str
    created: int = field(default_factory=lambda: int(time.time()))


async def prepare(request: Request, model_cls: type[R]) -> Prepared[R]:
    """Body → validated request (422/400), unknown parameters refused (400), engine ready (503), model
    known (404)."""
    state, ctx = get_state(request), get_ctx(request)
    req = parse_body(await request.body(), model_cls)
    reject_unsupported(req)
    if isinstance(req, SamplingRequest) and req.stream_options is not None and not req.stream:
        raise bad_request("The 'stream_options' parameter is only allowed when 'stream' is true.",
                          param="stream_options", code="invalid_value")
    engine = state.require_engine()
    model = state.resolve_model(getattr(req, "model", None))
    return Prepared(state, ctx, req, engine, state.info, state.require_tokenizer(), model)


def check_with_engine(engine: EngineClient, prompt: Sequence[int], params: SamplingParams, *, prompt_param: str,
                      renames: Mapping[str, str] | None = None) -> None:
    """The engine's validation of one prompt, its errors as this endpoint's 400s."""
    try:
        engine.check_request(prompt, params)
    except ContextLengthError as e:
        raise context_length_exceeded(e.max_model_len, e.prompt_tokens, e.max_tokens, prompt_param) from None
    except InvalidRequestError as e:
        raise map_invalid(e, {"prompt": prompt_param, **(renames or {})}) from None


def map_invalid(err: InvalidRequestError, renames: Mapping[str, str]) -> APIError:
    """An engine refusal as a 400 naming the endpoint's own field."""
    param = renames.get(err.param or "", err.param)
    message = str(err)
    if err.param and param != err.param and message.startswith(f"{err.param}="):
        message = f"{param}={message[len(err.param) + 1:]}"
    message += "" if message.endswith(".") else "."
    return bad_request(message, param=param, code=err.code)


def log_prompts(p: Prepared[Any], rid: str, prompts: Sequence[str | Sequence[int]], params: SamplingParams) -> None:
    """With `--log-requests` only: the prompts (text, or token ids) and parameters of one generation.
    Without it nothing a user wrote reaches the log."""
    if p.state.config.log_requests:
        logger.info("request %s id=%s prompts=%r params=%r", rid, p.ctx.request_id, list(prompts), params)


def response_base(obj: str, rid: str, created: int, model: str) -> dict[str, Any]:
    return {"id": rid, "object": obj, "created": created, "model": model, "system_fingerprint": FINGERPRINT}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


async def respond(request: Request, *, stream: bool, debug: bool, timing: Timing,
                  full: Callable[[], Awaitable[dict[str, Any]]],
                  events: Callable[[], AsyncIterator[bytes]]) -> Response:
    """The common tail: SSE for streams; otherwise the full body, unless the client left first (499)."""
    if stream:
        return SSEResponse(events())
    try:
        body = await until_disconnect(request.receive, full())
    except ClientDisconnected:
        return Response(status_code=499)
    return JSONResponse(body, headers=timing.headers() if debug else None)


@dataclass
class StreamChunks:
    """Chunk bodies of one OpenAI stream: `usage: null` on every chunk when usage was asked for, the
    usage chunk at the end, and the debug timing on the last chunk (or on the usage chunk)."""

    base: Callable[[], dict[str, Any]]
    include_usage: bool
    debug: bool
    timing: Timing
    num_choices: int
    finished: int = 0

    def chunk(self, choices: list[dict[str, Any]], finish: bool = False) -> dict[str, Any]:
        body = self.base()
        body["choices"] = choices
        if self.include_usage:
            body["usage"] = None
        self.finished += finish
        if finish and self.debug and not self.include_usage and self.finished == self.num_choices:
            body["awqserve_timing"] = self.timing.figures()
        return body

    def finish(self, events: AsyncGenerator[bytes, None],
               usage_now: Callable[[], dict[str, int]]) -> AsyncIterator[bytes]:
        """`events`, then the usage chunk (when asked for) and `[DONE]` (sse.finish_stream)."""
        def final() -> dict[str, Any]:
            body = self.base()
            body["choices"] = []
            body["usage"] = usage_now()
            if self.debug:
                body["awqserve_timing"] = self.timing.figures()
            return body

        return finish_stream(events, final if self.include_usage else None)
