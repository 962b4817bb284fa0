"""POST /v1/completions: prompt(s) as text, list of texts, token ids or lists of token ids; echo; legacy logprobs.

Each prompt is one engine request with `n` samples; choice index = prompt index * n + sample index.
"""
from __future__ import annotations

import uuid
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, AsyncGenerator, AsyncIterator

from starlette.requests import Request
from starlette.responses import Response

from awqserve.engine.outputs import CompletionOutput, RequestOutput
from awqserve.engine.sampling_params import SamplingParams
from awqserve.entrypoints.openai.errors import bad_request, unsupported_parameter
from awqserve.entrypoints.openai.logprobs import LegacyLogprobs
from awqserve.entrypoints.openai.protocol import CompletionRequest
from awqserve.entrypoints.openai.runner import Generation
from awqserve.entrypoints.openai.sampling import build_params
from awqserve.entrypoints.openai.serving_base import (Prepared, StreamChunks, check_with_engine, log_prompts, prepare,
                                                      respond, response_base, usage)
from awqserve.entrypoints.openai.serving_chat import finish_reason
from awqserve.entrypoints.openai.sse import sse_event
from awqserve.entrypoints.openai.structured_request import compile_constraint, completion_constraint
from awqserve.entrypoints.openai.tokenization import TokenizerView


@dataclass
class Prompt:
    ids: list[int]
    text: str | None  # the prompt's text for echo (decoded from ids after the engine checked them)


@dataclass
class _Choice:
    text: list[str] = field(default_factory=list)
    tokens: int = 0
    logprobs: LegacyLogprobs | None = None
    finish: str | None = None
    echoed: bool = False


def _prompts(req: CompletionRequest, tok: TokenizerView, max_model_len: int) -> list[Prompt]:
    """Normalise the four prompt forms; 400 for empty prompts (ids are checked by the engine)."""
    raw = req.prompt
    if isinstance(raw, str):
        raw = [raw]
    if not raw:
        raise bad_request("prompt must not be empty.", param="prompt", code="invalid_value")
    items: list[str | list[int]] = [raw] if isinstance(raw[0], int) else list(raw)
    out = []
    for item in items:
        if isinstance(item, str):
            tok.check_length(len(item), max_model_len, "prompt")
            out.append(Prompt(tok.encode(item, add_special_tokens=req.add_special_tokens), item))
        else:
            out.append(Prompt(list(item), None))
        if not out[-1].ids:
            raise bad_request("prompt must not be empty.", param="prompt", code="invalid_value")
    return out


@dataclass
class CompletionJob:
    p: Prepared[CompletionRequest]
    prompts: list[Prompt]
    k: int | None
    gen: Generation
    id: str

    def __post_init__(self) -> None:
        self.choices = [_Choice(logprobs=None if self.k is None else LegacyLogprobs(self.k))
                        for _ in range(len(self.prompts) * self.req.n)]

    @property
    def req(self) -> CompletionRequest:
        return self.p.req

    def base(self) -> dict[str, Any]:
        return response_base("text_completion", self.id, self.p.created, self.p.model)

    def usage(self) -> dict[str, int]:
        return usage(sum(len(x.ids) for x in self.prompts), sum(ch.tokens for ch in self.choices))

    def apply(self, pi: int, out: RequestOutput, o: CompletionOutput) -> tuple[int, str, dict[str, Any] | None]:
        """Fold one sample's delta into its choice; returns (choice index, new text, new logprobs)."""
        ci = pi * self.req.n + o.index
        ch, tok = self.choices[ci], self.p.tok
        start = len(ch.logprobs.tokens) if ch.logprobs is not None else 0
        text = ""
        if self.req.echo and not ch.echoed:
            ch.echoed = True
            prompt = self.prompts[pi]
            text = prompt.text if prompt.text is not None else tok.decode(prompt.ids)
            if ch.logprobs is not None:
                plp = out.prompt_logprobs or [None] * len(prompt.ids)
                ch.logprobs.add(tok, list(plp), prompt.ids)
        text += o.text_delta
        ch.text.append(text)
        ch.tokens += len(o.token_ids_delta)
        if ch.logprobs is not None and o.logprobs_delta:
            ch.logprobs.add(tok, list(o.logprobs_delta), [e.token_id for e in o.logprobs_delta])
        ch.finish = finish_reason(o) or ch.finish
        lp = ch.logprobs.delta_since(start) if ch.logprobs is not None else None
        return ci, text, lp


async def create_completion(request: Request) -> Response:
    p = await prepare(request, CompletionRequest)
    req = p.req
    if req.best_of is not None and req.best_of != req.n:
        raise unsupported_parameter("best_of", "Only best_of equal to n (or unset) is supported.")
    prompts = _prompts(req, p.tok, p.info.max_model_len)
    grammar = await compile_constraint(p.engine, completion_constraint(req))
    params: list[SamplingParams] = []
    for pr in prompts:
        sp = build_params(req, generation=p.info.generation_defaults, max_tokens=req.max_tokens,
                          logprobs=req.logprobs, grammar=grammar,
                          prompt_logprobs=req.logprobs if req.echo and req.logprobs is not None else None)
        check_with_engine(p.engine, pr.ids, sp, prompt_param="prompt")
        params.append(sp)
    p.state.admit(p.ctx.client, sum(len(x.ids) for x in prompts), len(prompts) * req.n,
                  "prompt" if len(prompts) > 1 else "n")
    rid = f"cmpl-{uuid.uuid4().hex}"
    log_prompts(p, rid, [x.text if x.text is not None else x.ids for x in prompts], params[0])
    job = CompletionJob(p, prompts, req.logprobs, Generation(p.state, p.ctx, rid, [x.ids for x in prompts], params),
                        id=rid)
    return await respond(request, stream=bool(req.stream), debug=p.ctx.debug, timing=job.gen.timing,
                         full=lambda: completion_full(job), events=lambda: completion_stream(job))


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


def completion_stream(job: CompletionJob) -> AsyncIterator[bytes]:
    """SSE: text deltas per choice, a finish chunk per choice, optional usage, [DONE]."""
    chunks = StreamChunks(job.base, job.req.include_usage, job.p.ctx.debug, job.gen.timing, len(job.choices))

    async def events() -> AsyncGenerator[bytes, None]:
        async with aclosing(job.gen.outputs()) as outs:
            async for pi, out in outs:
                for o in out.outputs:
                    ci, text, lp = job.apply(pi, out, o)
                    reason = job.choices[ci].finish if o.finished else None
                    if not (text or reason or (lp and lp["tokens"])):
                        continue
                    yield sse_event(chunks.chunk([{"index": ci, "text": text, "logprobs": lp,
                                                   "finish_reason": reason}], finish=reason is not None))

    return chunks.finish(events(), job.usage)
