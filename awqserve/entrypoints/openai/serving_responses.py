"""POST /v1/responses, GET and DELETE /v1/responses/{id}: OpenAI's Responses API over the chat pipeline.

Not a second pipeline: a Responses request becomes an internal `ChatCompletionRequest`
(responses_items.py) and runs exactly as a chat completion does (build_conversation →
compile_constraint → build_params → check_with_engine → admit → Generation → ChoiceOutput, through
`ChatJob`). Only the edges differ: field names in errors (`input`, `text.format`,
`max_output_tokens`), parser events → output items and the Responses stream framing
(responses_output.py), and the optional store (responses_store.py) behind
`previous_response_id`.
"""
from __future__ import annotations

import re
import time
from contextlib import aclosing, contextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterator

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from awqserve.engine.outputs import CompletionOutput, RequestOutput
from awqserve.engine.sampling_params import SamplingParams
from awqserve.entrypoints.openai.chat_output import ChoiceOutput
from awqserve.entrypoints.openai.errors import APIError, bad_request, unsupported_parameter
from awqserve.entrypoints.openai.protocol import ChatCompletionRequest, validation_error
from awqserve.entrypoints.openai.protocol_responses import (FunctionTool, ResponsesRequest, parse_items,
                                                            parse_tools, refusals)
from awqserve.entrypoints.openai.responses_items import (chat_messages, chat_response_format, chat_tool_choice,
                                                         chat_tools, format_echo, item_dicts, new_id, tools_echo)
from awqserve.entrypoints.openai.responses_output import Event, EventFramer, OutputItems, ReasoningCounter
from awqserve.entrypoints.openai.responses_store import ResponseStore, StoredResponse
from awqserve.entrypoints.openai.serving_base import Prepared, prepare, respond
from awqserve.entrypoints.openai.serving_chat import ChatJob, start_chat_job
from awqserve.entrypoints.openai.state import get_state

# chat field names in errors of the shared pipeline → this endpoint's (longest first)
_RENAMES = (("response_format.json_schema", "text.format"), ("response_format", "text.format"),
            ("tool_choice.function.name", "tool_choice.name"), ("max_tokens", "max_output_tokens"))


def _rename(err: APIError) -> APIError:
    param, message = err.param, err.message
    for old, new in _RENAMES:
        message = re.sub(rf"\b{re.escape(old)}\b", new, message)
        if param is not None and (param == old or param.startswith((old + ".", old + "["))):
            param = new + param[len(old):]
    if param is not None and param.startswith(("messages", "prompt")):
        param = "input"  # a rendered message has no index the client would recognise
    return APIError(err.status, message, type=err.type, param=param, code=err.code, retry_after=err.retry_after,
                    headers=err.headers)


@contextmanager
def _responses_fields() -> Iterator[None]:
    """Errors raised by the shared chat pipeline, renamed to this endpoint's fields."""
    try:
        yield
    except APIError as e:
        raise _rename(e) from None


def store_of(request: Request) -> ResponseStore:
    """The app's store of finished responses (AppState owns it; `--responses-store-size` entries)."""
    return get_state(request).responses


@dataclass
class ResponsesJob:
    """An admitted Responses request: the chat job that runs it and what its response reports."""

    chat: ChatJob
    req: ResponsesRequest
    params: SamplingParams
    tools: list[FunctionTool]
    history: list[dict[str, Any]]  # the conversation before this response's output
    store: ResponseStore | None  # None: this response is not kept
    counter: ReasoningCounter
    items: OutputItems = field(default_factory=OutputItems)
    cached_tokens: int = 0
    final: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        return self.chat.id

    @property
    def choice(self) -> ChoiceOutput:
        return self.chat.choices[0]

    def observe(self, out: RequestOutput) -> None:
        self.cached_tokens = max(self.cached_tokens, out.num_cached_tokens)

    def fold(self, o: CompletionOutput) -> list[Event]:
        """One engine delta → stream events (the items grow as a side effect)."""
        _, events, reason = self.chat.fold(o)
        self.counter.count(len(o.token_ids_delta), events)
        out = self.items.feed(events)
        if reason is not None:
            out += self.items.finish(incomplete=reason == "length")
        return out

    def usage(self) -> dict[str, Any]:
        prompt, output = len(self.chat.prompt), self.choice.tokens
        return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": self.cached_tokens,
                                                                  "cache_write_tokens": 0},
                "output_tokens": output, "output_tokens_details": {"reasoning_tokens": self.counter.tokens},
                "total_tokens": prompt + output}

    def body(self, status: str) -> dict[str, Any]:
        """The Response object in its current state (`usage` once finished)."""
        req, p = self.req, self.chat.p
        b: dict[str, Any] = {
            "id": self.id, "object": "response", "created_at": p.created, "status": status,
            "completed_at": int(time.time()) if status == "completed" else None, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": req.instructions, "max_output_tokens": req.max_output_tokens,
            "max_tool_calls": req.max_tool_calls, "model": p.model, "output": self.items.output,
            "parallel_tool_calls": req.parallel_tool_calls is not False,
            "previous_response_id": req.previous_response_id, "reasoning": None, "service_tier": "default",
            "store": self.store is not None, "temperature": self.params.temperature,
            "text": format_echo(req.text.format if req.text else None), "tool_choice": req.tool_choice or "auto",
            "tools": tools_echo(self.tools), "top_p": req.top_p if req.top_p is not None else self.params.top_p,
            "truncation": "disabled", "metadata": req.metadata or {}, "background": False}
        for name in ("user", "safety_identifier", "prompt_cache_key"):
            if getattr(req, name) is not None:
                b[name] = getattr(req, name)
        if status in ("completed", "incomplete"):
            b["usage"] = self.usage()
        return b

    def finish(self) -> dict[str, Any]:
        """The final Response (after the last output), kept in the store when asked to."""
        if self.final is None:
            self.final = self.body("incomplete" if self.choice.finish == "length" else "completed")
            if self.store is not None:
                conversation = (*self.history, *self.items.output)
                self.store.put(self.id, StoredResponse(self.final, conversation))
        return self.final


# ---- POST /v1/responses ----

async def create_response(request: Request) -> Response:
    p = await prepare(request, ResponsesRequest)
    req = p.req
    refusals(req)
    store = store_of(request)
    with _responses_fields():
        tools = parse_tools(req.tools or [])
        previous = _previous(store, req.previous_response_id)
        earlier = parse_items(previous, "previous_response_id")
        new = parse_items([{"role": "user", "content": req.input}] if isinstance(req.input, str) else req.input)
        chat = _chat_request(req, chat_messages([*earlier, *new], req.instructions, first=len(earlier)), tools)
        job = await _start(p, chat, req, tools, [*previous, *item_dicts(new)],
                           store if store.enabled and req.store is not False else None)
    return await respond(request, stream=bool(req.stream), debug=p.ctx.debug, timing=job.chat.gen.timing,
                         full=lambda: responses_full(job), events=lambda: responses_stream(job))


def _previous(store: ResponseStore, response_id: str | None) -> list[dict[str, Any]]:
    """The stored conversation `previous_response_id` continues (empty without one)."""
    if response_id is None:
        return []
    if not store.enabled:
        raise unsupported_parameter("previous_response_id", "This server keeps no responses "
                                    "(--responses-store-size 0): send the whole conversation as input items, or "
                                    "start the server with --responses-store-size N.")
    entry = store.get(response_id)
    if entry is None:
        raise bad_request(f"Previous response with id {response_id!r} not found (never stored, deleted, or evicted "
                          f"from the last {store.capacity} kept).", param="previous_response_id",
                          code="previous_response_not_found")
    return list(entry.conversation)


def _chat_request(req: ResponsesRequest, messages: list[dict[str, Any]],
                  tools: list[FunctionTool]) -> ChatCompletionRequest:
    fields = {"messages": messages, "tools": chat_tools(tools) or None,
              "tool_choice": chat_tool_choice(req.tool_choice), "parallel_tool_calls": req.parallel_tool_calls,
              "response_format": chat_response_format(req.text.format if req.text else None),
              "max_tokens": req.max_output_tokens, "temperature": req.temperature, "top_p": req.top_p,
              "top_k": req.top_k, "min_p": req.min_p, "repetition_penalty": req.repetition_penalty, "seed": req.seed,
              "user": req.user, "stream": req.stream}
    try:
        return ChatCompletionRequest.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as e:  # our own models validate first; kept as a 422, never a 500
        raise validation_error(list(e.errors())) from None


async def _start(p: Prepared[ResponsesRequest], chat: ChatCompletionRequest, req: ResponsesRequest,
                 tools: list[FunctionTool], history: list[dict[str, Any]], store: ResponseStore | None) -> ResponsesJob:
    """The translated request, started exactly as a chat completion (serving_chat.start_chat_job)."""
    cp = Prepared(p.state, p.ctx, chat, p.engine, p.info, p.tok, p.model, p.created)
    job, conv, params = await start_chat_job(cp, new_id("resp"), prompt_param="input")
    return ResponsesJob(job, req, params, tools, history, store, ReasoningCounter(conv.starts_in_reasoning))


async def responses_full(job: ResponsesJob) -> dict[str, Any]:
    async with aclosing(job.chat.gen.outputs()) as outs:
        async for _, out in outs:
            job.observe(out)
            for o in out.outputs:
                job.fold(o)
    return job.finish()


async def responses_stream(job: ResponsesJob) -> AsyncIterator[bytes]:
    """SSE: response.created, response.in_progress, the item events as the output grows, then
    response.completed or response.incomplete with the final response (usage included); an error
    after the 200 is one `error` event. Closing this generator aborts the engine work."""
    framer = EventFramer()
    yield framer.frame({"type": "response.created", "response": job.body("in_progress")})
    yield framer.frame({"type": "response.in_progress", "response": job.body("in_progress")})
    try:
        async with aclosing(job.chat.gen.outputs()) as outs:
            async for _, out in outs:
                job.observe(out)
                for o in out.outputs:
                    for event in job.fold(o):
                        yield framer.frame(event)
    except APIError as e:
        yield framer.error(e)
        return
    final = job.finish()
    last: dict[str, Any] = {"type": f"response.{final['status']}", "response": final}
    if job.chat.p.ctx.debug:
        last["awqserve_timing"] = job.chat.gen.timing.figures()
    yield framer.frame(last)


# ---- GET / DELETE /v1/responses/{response_id} ----

def _stored(request: Request) -> tuple[ResponseStore, str]:
    for name in ("stream", "starting_after", "include"):
        if name in request.query_params and request.query_params[name] not in ("", "false", "0"):
            raise unsupported_parameter(name, "Stored responses are returned whole, as JSON.")
    return store_of(request), str(request.path_params["response_id"])


def _not_found(store: ResponseStore, response_id: str) -> APIError:
    why = "" if store.enabled else " This server keeps no responses (--responses-store-size 0)."
    return APIError(404, f"No response with id {response_id!r} is stored here.{why}", param="response_id",
                    code="not_found")


async def retrieve_response(request: Request) -> Response:
    store, rid = _stored(request)
    entry = store.get(rid)
    if entry is None:
        raise _not_found(store, rid)
    return JSONResponse(entry.body)


async def delete_response(request: Request) -> Response:
    store, rid = _stored(request)
    if not store.delete(rid):
        raise _not_found(store, rid)
    return JSONResponse({"id": rid, "object": "response", "deleted": True})
