"""POST /v1/chat/completions: validate → chat template → admission → engine → JSON or SSE chunks."""
from __future__ import annotations

import time
import uuid
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from awqserve.engine.outputs import CompletionOutput
from awqserve.entrypoints.openai.errors import APIError, bad_request
from awqserve.entrypoints.openai.logprobs import chat_logprobs
from awqserve.entrypoints.openai.protocol import ChatCompletionRequest, parse_body, reject_unsupported
from awqserve.entrypoints.openai.runner import ClientDisconnected, Generation, until_disconnect
from awqserve.entrypoints.openai.sampling import build_params, check_logprobs, resolve_max_tokens
from awqserve.entrypoints.openai.sse import SSEResponse, finish_stream, sse_event
from awqserve.entrypoints.openai.state import AppState, get_ctx, get_state
from awqserve.entrypoints.openai.tokenization import messages_to_dicts
from awqserve.version import __version__

FINGERPRINT = f"fp_awqserve_{__version__}"


def finish_reason(o: CompletionOutput) -> str | None:
    """Engine reason → API reason; an engine-side abort we did not ask for is an error."""
    if o.finish_reason == "abort":
        raise APIError(503, "The engine aborted this request.", code="aborted", retry_after=1)
    return o.finish_reason


@dataclass
class _Choice:
    text: list[str] = field(default_factory=list)
    tokens: int = 0
    logprobs: list[Any] = field(default_factory=list)
    finish: str | None = None


@dataclass
class ChatJob:
    """A validated, admitted chat request ready to run."""

    state: AppState
    req: ChatCompletionRequest
    model: str
    prompt: list[int]
    top_logprobs: int | None
    gen: Generation
    id: str
    created: int = field(default_factory=lambda: int(time.time()))

    def base(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "system_fingerprint": FINGERPRINT}

    def logprobs(self, o: CompletionOutput) -> dict[str, Any] | None:
        if self.top_logprobs is None:
            return None
        return chat_logprobs(self.state.tokenizer, list(o.logprobs_delta or []), self.top_logprobs)  # type: ignore[arg-type]

    def usage(self, completion_tokens: int) -> dict[str, int]:
        p = len(self.prompt)
        return {"prompt_tokens": p, "completion_tokens": completion_tokens, "total_tokens": p + completion_tokens}


async def create_chat_completion(request: Request) -> Response:
    state, ctx = get_state(request), get_ctx(request)
    req = parse_body(await request.body(), ChatCompletionRequest)
    reject_unsupported(req)
    engine = state.require_engine()
    model = state.resolve_model(req.model)
    tok = state.tokenizer
    assert tok is not None
    prompt = tok.chat_prompt(messages_to_dicts(req.messages), req.add_generation_prompt)
    k = _top_logprobs(req, state.engine_config.max_logprobs)
    max_tokens = resolve_max_tokens(engine.max_model_len, len(prompt), req.requested_max_tokens, "messages")
    params = build_params(req, engine=engine, vocab_size=tok.vocab_size, max_tokens=max_tokens, logprobs=k)
    state.admit(ctx.client, len(prompt))
    rid = f"chatcmpl-{uuid.uuid4().hex}"
    job = ChatJob(state, req, model, prompt, k, Generation(state, ctx, rid, [prompt], [params]), id=rid)
    debug = ctx.debug
    if req.stream:
        return SSEResponse(chat_stream(job, debug))
    try:
        body = await until_disconnect(request.receive, chat_full(job))
    except ClientDisconnected:
        return Response(status_code=499)
    return JSONResponse(body, headers=job.gen.timing.headers() if debug else None)


def _top_logprobs(req: ChatCompletionRequest, max_logprobs: int) -> int | None:
    if not req.logprobs:
        if req.top_logprobs is not None:
            raise bad_request("top_logprobs requires logprobs to be true.", param="top_logprobs",
                              code="invalid_value")
        return None
    k = req.top_logprobs or 0
    check_logprobs(k, max_logprobs, "top_logprobs")
    return k


async def chat_full(job: ChatJob) -> dict[str, Any]:
    choices = [_Choice() for _ in range(job.req.n)]
    async with aclosing(job.gen.outputs()) as outs:
        async for _, out in outs:
            for o in out.outputs:
                c = choices[o.index]
                c.text.append(o.text_delta)
                c.tokens += len(o.token_ids_delta)
                if job.top_logprobs is not None:
                    c.logprobs.extend((job.logprobs(o) or {}).get("content", []))
                c.finish = finish_reason(o) or c.finish
    body = job.base("chat.completion")
    body["choices"] = [{
        "index": i, "message": {"role": "assistant", "content": "".join(c.text), "refusal": None},
        "logprobs": None if job.top_logprobs is None else {"content": c.logprobs, "refusal": None},
        "finish_reason": c.finish or "stop",
    } for i, c in enumerate(choices)]
    body["usage"] = job.usage(sum(c.tokens for c in choices))
    return body


def chat_stream(job: ChatJob, debug: bool) -> AsyncIterator[bytes]:
    """SSE: role chunk per choice, content deltas, a finish chunk per choice, optional usage, [DONE]."""
    include_usage = job.req.include_usage
    n = job.req.n
    tokens = 0

    def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> dict[str, Any]:
        body = job.base("chat.completion.chunk")
        body["choices"] = choices
        if include_usage:
            body["usage"] = usage
        return body

    async def events() -> AsyncIterator[bytes]:
        nonlocal tokens
        for i in range(n):
            yield sse_event(chunk([{"index": i, "delta": {"role": "assistant", "content": ""},
                                    "logprobs": None, "finish_reason": None}]))
        finished = 0
        async with aclosing(job.gen.outputs()) as outs:
            async for _, out in outs:
                for o in out.outputs:
                    tokens += len(o.token_ids_delta)
                    reason = finish_reason(o)
                    if not (o.text_delta or reason or o.logprobs_delta):
                        continue
                    body = chunk([{"index": o.index, "delta": {"content": o.text_delta} if o.text_delta else {},
                                   "logprobs": job.logprobs(o), "finish_reason": reason}])
                    finished += reason is not None
                    if debug and not include_usage and finished == n and reason is not None:
                        body["awqserve_timing"] = job.gen.timing.figures()
                    yield sse_event(body)

    def usage_chunk() -> dict[str, Any]:
        body = chunk([], job.usage(tokens))
        if debug:
            body["awqserve_timing"] = job.gen.timing.figures()
        return body

    return finish_stream(events(), usage_chunk if include_usage else None)
