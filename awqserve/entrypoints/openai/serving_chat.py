"""POST /v1/chat/completions: validate → chat template → engine check → admission → engine → JSON or SSE."""
from __future__ import annotations

import uuid
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, AsyncGenerator, AsyncIterator

from starlette.requests import Request
from starlette.responses import Response

from awqserve.engine.outputs import CompletionOutput
from awqserve.entrypoints.openai.errors import APIError, bad_request
from awqserve.entrypoints.openai.logprobs import chat_logprobs
from awqserve.entrypoints.openai.protocol import ChatCompletionRequest
from awqserve.entrypoints.openai.runner import Generation
from awqserve.entrypoints.openai.sampling import build_params
from awqserve.entrypoints.openai.serving_base import (Prepared, StreamChunks, check_with_engine, log_prompts, prepare,
                                                      respond, response_base, usage)
from awqserve.entrypoints.openai.sse import sse_event
from awqserve.entrypoints.openai.chat_output import ChoiceOutput, stream_deltas
from awqserve.engine.sampling_params import SamplingParams
from awqserve.entrypoints.openai.conversation import Conversation, build_conversation
from awqserve.entrypoints.openai.structured_request import compile_constraint
from awqserve.parsers import ParserEvent


def finish_reason(o: CompletionOutput) -> str | None:
    """Engine reason → API reason; an engine-side abort we did not ask for is an error."""
    if o.finish_reason == "abort":
        raise APIError(503, "The engine aborted this request.", code="aborted", retry_after=1)
    return o.finish_reason


@dataclass
class ChatJob:
    """A validated, admitted chat request ready to run: its prompt, options and one output per choice."""

    p: Prepared[ChatCompletionRequest]
    prompt: list[int]
    top_logprobs: int | None
    gen: Generation
    id: str
    choices: list[ChoiceOutput]

    @property
    def req(self) -> ChatCompletionRequest:
        return self.p.req

    def base(self, obj: str) -> dict[str, Any]:
        return response_base(obj, self.id, self.p.created, self.p.model)

    def logprobs(self, o: CompletionOutput) -> dict[str, Any] | None:
        if self.top_logprobs is None:
            return None
        return chat_logprobs(self.p.tok, list(o.logprobs_delta or []), self.top_logprobs)

    def usage(self) -> dict[str, int]:
        return usage(len(self.prompt), sum(c.tokens for c in self.choices))

    def fold(self, o: CompletionOutput) -> tuple[ChoiceOutput, list[ParserEvent], str | None]:
        """One sample's delta into its choice: (choice, parser events, API finish reason or None)."""
        c = self.choices[o.index]
        c.tokens += len(o.token_ids_delta)
        reason = finish_reason(o)
        events = c.feed(o.text_delta, reason is not None)
        if reason is not None:
            c.finish = c.finish_reason(reason)
        return c, events, c.finish if reason is not None else None


async def start_chat_job(p: Prepared[ChatCompletionRequest], rid: str, *,
                         prompt_param: str = "messages") -> tuple[ChatJob, Conversation, SamplingParams]:
    """A chat request up to the engine: conversation, grammar compile, params, the engine's check,
    admission. Shared with the Responses API, which runs its requests as chat requests."""
    req = p.req
    conv = build_conversation(p)
    k = _top_logprobs(req)
    grammar = await compile_constraint(p.engine, conv.constraint)
    params = build_params(req, generation=p.info.generation_defaults, max_tokens=req.requested_max_tokens,
                          logprobs=k, grammar=grammar)
    check_with_engine(p.engine, conv.prompt, params, prompt_param=prompt_param, renames={"logprobs": "top_logprobs"})
    log_prompts(p, rid, [conv.prompt_text], params)
    p.state.admit(p.ctx.client, len(conv.prompt), req.n)
    choices = [ChoiceOutput(conv.parser(), conv.reasoning) for _ in range(req.n)]
    job = ChatJob(p, conv.prompt, k, Generation(p.state, p.ctx, rid, [conv.prompt], [params]), rid, choices)
    return job, conv, params


async def create_chat_completion(request: Request) -> Response:
    p = await prepare(request, ChatCompletionRequest)
    job, _, _ = await start_chat_job(p, f"chatcmpl-{uuid.uuid4().hex}")
    return await respond(request, stream=bool(p.req.stream), debug=p.ctx.debug, timing=job.gen.timing,
                         full=lambda: chat_full(job), events=lambda: chat_stream(job))


def _top_logprobs(req: ChatCompletionRequest) -> int | None:
    if not req.logprobs:
        if req.top_logprobs is not None:
            raise bad_request("top_logprobs requires logprobs to be true.", param="top_logprobs",
                              code="invalid_value")
        return None
    return req.top_logprobs or 0


async def chat_full(job: ChatJob) -> dict[str, Any]:
    async with aclosing(job.gen.outputs()) as outs:
        async for _, out in outs:
            for o in out.outputs:
                c, _, _ = job.fold(o)
                if job.top_logprobs is not None:
                    c.logprobs.extend((job.logprobs(o) or {}).get("content", []))
    body = job.base("chat.completion")
    body["choices"] = [{
        "index": i, "message": c.message(),
        "logprobs": None if job.top_logprobs is None else {"content": c.logprobs, "refusal": None},
        "finish_reason": c.finish or "stop",
    } for i, c in enumerate(job.choices)]
    body["usage"] = job.usage()
    return body


def chat_stream(job: ChatJob) -> AsyncIterator[bytes]:
    """SSE: role chunk per choice, content / reasoning / tool-call deltas, a finish chunk per choice,
    optional usage, [DONE]."""
    n = job.req.n
    chunks = StreamChunks(lambda: job.base("chat.completion.chunk"), job.req.include_usage, job.p.ctx.debug,
                          job.gen.timing, n)

    def choice(i: int, delta: dict[str, Any], logprobs: Any = None, reason: str | None = None) -> bytes:
        return sse_event(chunks.chunk([{"index": i, "delta": delta, "logprobs": logprobs,
                                        "finish_reason": reason}], finish=reason is not None))

    async def events() -> AsyncGenerator[bytes, None]:
        for i in range(n):
            yield choice(i, {"role": "assistant", "content": ""})
        async with aclosing(job.gen.outputs()) as outs:
            async for _, out in outs:
                for o in out.outputs:
                    c, evs, reason = job.fold(o)
                    deltas = stream_deltas(evs, c.reasoning)
                    lp = job.logprobs(o) if o.logprobs_delta else None
                    if reason is None and not deltas and lp is None:
                        continue
                    for j, delta in enumerate(deltas or [{}]):
                        last = j == max(len(deltas), 1) - 1
                        yield choice(o.index, delta, lp if j == 0 else None, reason if last else None)

    return chunks.finish(events(), job.usage)
