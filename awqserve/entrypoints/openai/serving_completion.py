"""POST /v1/completions: prompt(s) as text, list of texts, token ids or lists of token ids; echo; legacy logprobs.

Each prompt is one engine request with `n` samples; choice index = prompt index * n + sample index.
"""
from __future__ import annotations

import time
import uuid
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from awqserve.engine.outputs import CompletionOutput, RequestOutput
from awqserve.entrypoints.openai.errors import bad_request, unsupported_parameter
from awqserve.entrypoints.openai.logprobs import LegacyLogprobs
from awqserve.entrypoints.openai.protocol import CompletionRequest, parse_body, reject_unsupported
from awqserve.entrypoints.openai.runner import ClientDisconnected, Generation, until_disconnect
from awqserve.entrypoints.openai.sampling import build_params, check_logprobs, resolve_max_tokens
from awqserve.entrypoints.openai.serving_chat import FINGERPRINT, finish_reason
from awqserve.entrypoints.openai.sse import SSEResponse, finish_stream, sse_event
from awqserve.entrypoints.openai.state import AppState, get_ctx, get_state
from awqserve.entrypoints.openai.tokenization import TokenizerView


@dataclass
class Prompt:
    ids: list[int]
    text: str


@dataclass
class _Choice:
    text: list[str] = field(default_factory=list)
    tokens: int = 0
    logprobs: LegacyLogprobs | None = None
    finish: str | None = None
    echoed: bool = False


def _prompts(req: CompletionRequest, tok: TokenizerView) -> list[Prompt]:
    """Normalise the four prompt forms; 400 for empty prompts or token ids outside the vocabulary."""
    raw = req.prompt
    if isinstance(raw, str):
        raw = [raw]
    if not raw:
        raise bad_request("prompt must not be empty.", param="prompt", code="invalid_value")
    if isinstance(raw[0], int):
        raw = [raw]  # type: ignore[list-item]
    out = []
    for item in raw:
        if isinstance(item, str):
            out.append(Prompt(tok.encode(item, add_special_tokens=req.add_special_tokens), item))
        else:
            ids = list(item)  # type: ignore[arg-type]
            bad = [t for t in ids if not 0 <= t < tok.vocab_size]
            if bad:
                raise bad_request(f"prompt contains token id {bad[0]}, outside the vocabulary "
                                  f"(0..{tok.vocab_size - 1}).", param="prompt", code="invalid_value")
            out.append(Prompt(ids, tok.decode(ids)))
        if not out[-1].ids:
            raise bad_request("prompt must not be empty.", param="prompt", code="invalid_value")
    return out


@dataclass
class CompletionJob:
    state: AppState
    req: CompletionRequest
    model: str
    prompts: list[Prompt]
    k: int | None
    gen: Generation
    id: str
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.choices = [_Choice(logprobs=None if self.k is None else LegacyLogprobs(self.k))
                        for _ in range(len(self.prompts) * self.req.n)]

    def base(self) -> dict[str, Any]:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "system_fingerprint": FINGERPRINT}

    def usage(self) -> dict[str, int]:
        p = sum(len(x.ids) for x in self.prompts)
        c = sum(ch.tokens for ch in self.choices)
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    def apply(self, pi: int, out: RequestOutput, o: CompletionOutput) -> tuple[int, str, dict[str, Any] | None]:
        """Fold one sample's delta into its choice; returns (choice index, new text, new logprobs)."""
        ci = pi * self.req.n + o.index
        ch = self.choices[ci]
        tok = self.state.tokenizer
        assert tok is not None
        start = len(ch.logprobs.tokens) if ch.logprobs is not None else 0
        text = ""
        if self.req.echo and not ch.echoed:
            ch.echoed = True
            text = self.prompts[pi].text
            if ch.logprobs is not None:
                plp = out.prompt_logprobs or [None] * len(self.prompts[pi].ids)
                ch.logprobs.add(tok, list(plp), self.prompts[pi].ids)
        text += o.text_delta
        ch.text.append(text)
        ch.tokens += len(o.token_ids_delta)
        if ch.logprobs is not None and o.logprobs_delta:
            ch.logprobs.add(tok, list(o.logprobs_delta), [e.token_id for e in o.logprobs_delta])
        ch.finish = finish_reason(o) or ch.finish
        lp = ch.logprobs.delta_since(start) if ch.logprobs is not None else None
        return ci, text, lp


async def create_completion(request: Request) -> Response:
    state, ctx = get_state(request), get_ctx(request)
    req = parse_body(await request.body(), CompletionRequest)
    reject_unsupported(req)
    if req.best_of is not None and req.best_of != req.n:
        raise unsupported_parameter("best_of", "Only best_of equal to n (or unset) is supported.")
    engine = state.require_engine()
    model = state.resolve_model(req.model)
    tok = state.tokenizer
    assert tok is not None
    prompts = _prompts(req, tok)
    check_logprobs(req.logprobs, state.engine_config.max_logprobs, "logprobs")
    params = []
    for p in prompts:
        max_tokens = resolve_max_tokens(engine.max_model_len, len(p.ids), req.max_tokens, "prompt")
        params.append(build_params(req, engine=engine, vocab_size=tok.vocab_size, max_tokens=max_tokens,
                                   logprobs=req.logprobs,
                                   prompt_logprobs=req.logprobs if req.echo and req.logprobs is not None else None))
    state.admit(ctx.client, sum(len(p.ids) for p in prompts))
    rid = f"cmpl-{uuid.uuid4().hex}"
    job = CompletionJob(state, req, model, prompts, req.logprobs,
                        Generation(state, ctx, rid, [p.ids for p in prompts], params), id=rid)
    if req.stream:
        return SSEResponse(completion_stream(job, ctx.debug))
    try:
        body = await until_disconnect(request.receive, completion_full(job))
    except ClientDisconnected:
        return Response(status_code=499)
    return JSONResponse(body, headers=job.gen.timing.headers() if ctx.debug else None)


async def completion_full(job: CompletionJob) -> dict[str, Any]:
    async with aclosing(job.gen.outputs()) as outs:
        async for pi, out in outs:
            for o in out.outputs:
                job.apply(pi, out, o)
    body = job.base()
    body["choices"] = [{"index": i, "text": "".join(c.text), "finish_reason": c.finish or "stop",
                        "logprobs": c.logprobs.as_dict() if c.logprobs is not None else None}
                       for i, c in enumerate(job.choices)]
    body["usage"] = job.usage()
    return body


def completion_stream(job: CompletionJob, debug: bool) -> AsyncIterator[bytes]:
    """SSE: text deltas per choice, a finish chunk per choice, optional usage, [DONE]."""
    include_usage = job.req.include_usage
    total = len(job.choices)

    def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> dict[str, Any]:
        body = job.base()
        body["choices"] = choices
        if include_usage:
            body["usage"] = usage
        return body

    async def events() -> AsyncIterator[bytes]:
        finished = 0
        async with aclosing(job.gen.outputs()) as outs:
            async for pi, out in outs:
                for o in out.outputs:
                    ci, text, lp = job.apply(pi, out, o)
                    reason = job.choices[ci].finish if o.finished else None
                    if not (text or reason or (lp and lp["tokens"])):
                        continue
                    finished += reason is not None
                    body = chunk([{"index": ci, "text": text, "logprobs": lp, "finish_reason": reason}])
                    if debug and not include_usage and finished == total and reason is not None:
                        body["awqserve_timing"] = job.gen.timing.figures()
                    yield sse_event(body)

    def usage_chunk() -> dict[str, Any]:
        body = chunk([], job.usage())
        if debug:
            body["awqserve_timing"] = job.gen.timing.figures()
        return body

    return finish_stream(events(), usage_chunk if include_usage else None)
