"""Request fields → the output constraint (`GrammarSpec`), and its compile as a 400 when it fails.

Sources, one at most per request (two are a 400 naming both): OpenAI's `response_format`
(`json_object`, `json_schema`; `text` is no constraint), vLLM's `structured_outputs` (`json`, `regex`,
`choice`, `grammar`, `json_object`) and its older aliases `guided_json` / `guided_regex` /
`guided_choice` / `guided_grammar` (honoured, never ignored). Tools add the hermes tool-call grammar:
`tool_choice` "required" or a named function constrain every call; "auto" leaves text free until the
model opens a call (with a response format, the alternative to calling is an answer in that format);
`parallel_tool_calls: false` allows one call. With `--reasoning-parser`, every constraint applies after
the reasoning block.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from awqserve.engine.protocol import EngineClient
from awqserve.entrypoints.openai.errors import APIError, bad_request, unsupported_parameter
from awqserve.entrypoints.openai.protocol import ChatCompletionRequest, SamplingRequest
from awqserve.structured import GrammarError, GrammarSpec, ReasoningPrefix, ToolCallMode, ToolSpec

BACKEND_NAMES = (None, "auto", "guidance", "llguidance")  # what `guided_decoding_backend` may say


_Build = Callable[[Any], GrammarSpec]


def _found(fields: list[tuple[str, Any, _Build]]) -> list[tuple[str, GrammarSpec]]:
    """(field, spec) for every field of (name, value, constructor) that has a value; a spec that cannot
    be built is a 400 naming its field."""
    return [(name, _spec(lambda: build(value), name)) for name, value, build in fields if value is not None]


def _structured_outputs(req: SamplingRequest) -> list[tuple[str, GrammarSpec]]:
    so = req.structured_outputs
    if so is None:
        return []
    return _found([("structured_outputs.json", so.json_, GrammarSpec.json_schema),
                   ("structured_outputs.regex", so.regex, GrammarSpec.regex),
                   ("structured_outputs.choice", so.choice, GrammarSpec.choice),
                   ("structured_outputs.grammar", so.grammar, GrammarSpec.grammar),
                   ("structured_outputs.json_object", so.json_object or None, lambda _: GrammarSpec.json_object())])


def _guided(req: SamplingRequest) -> list[tuple[str, GrammarSpec]]:
    if req.guided_decoding_backend not in BACKEND_NAMES:
        raise unsupported_parameter("guided_decoding_backend", f"This server decodes with llguidance; got "
                                    f"{req.guided_decoding_backend!r} (use 'auto' or leave it out).")
    if req.guided_choice is not None and not req.guided_choice:
        raise bad_request("guided_choice must list at least one string.", param="guided_choice", code="invalid_value")
    return _found([("guided_json", req.guided_json, GrammarSpec.json_schema),
                   ("guided_regex", req.guided_regex, GrammarSpec.regex),
                   ("guided_choice", req.guided_choice, GrammarSpec.choice),
                   ("guided_grammar", req.guided_grammar, GrammarSpec.grammar)])


def _response_format(req: ChatCompletionRequest) -> list[tuple[str, GrammarSpec]]:
    rf = req.response_format
    if rf is None or rf.type == "text":
        return []
    if rf.type == "json_object":
        return [("response_format", GrammarSpec.json_object())]
    if rf.json_schema is None:
        raise bad_request("response_format of type json_schema needs a json_schema object.",
                          param="response_format.json_schema", code="missing_required_parameter")
    schema = rf.json_schema.schema_ if rf.json_schema.schema_ is not None else {}
    return _found([("response_format.json_schema", schema, GrammarSpec.json_schema)])


def _one(found: list[tuple[str, GrammarSpec]]) -> tuple[str, GrammarSpec] | None:
    if len(found) > 1:
        raise bad_request(f"Conflicting output constraints: {found[0][0]} and {found[1][0]}; send one.",
                          param=found[1][0], code="invalid_value")
    return found[0] if found else None


def _spec(build: Any, param: str) -> Any:
    """Run a spec constructor; its GrammarError as a 400 naming `param`."""
    try:
        return build()
    except GrammarError as e:
        raise bad_request(f"{param}: {e}", param=param, code="invalid_value") from None


def completion_constraint(req: SamplingRequest) -> tuple[str, GrammarSpec] | None:
    """The constraint of a completions request: `structured_outputs` or a `guided_*` field."""
    return _one(_structured_outputs(req) + _guided(req))


def chat_constraint(req: ChatCompletionRequest, tools: list[dict[str, Any]], *, reasoning: bool,
                    starts_in_reasoning: bool) -> tuple[str, GrammarSpec] | None:
    """(field that asked for it, spec) of a chat request, or None. `tools`: the offered tools
    (empty when none are, or tool_choice is "none")."""
    fmt = _one(_response_format(req) + _structured_outputs(req) + _guided(req))
    found = fmt
    if tools:
        found = ("tools", _spec(lambda: _tool_spec(req, tools, fmt), "tools"))
    if found is None or not reasoning:
        return found
    prefix = ReasoningPrefix.OPEN if starts_in_reasoning else ReasoningPrefix.OPTIONAL
    return found[0], found[1].after_reasoning(prefix)


def _tool_spec(req: ChatCompletionRequest, tools: list[dict[str, Any]],
               fmt: tuple[str, GrammarSpec] | None) -> GrammarSpec:
    specs = [ToolSpec(t["function"]["name"], t["function"].get("parameters")) for t in tools]
    parallel = req.parallel_tool_calls is not False
    choice = req.tool_choice or "auto"
    if choice == "auto":
        spec = GrammarSpec.tool_calls(specs, ToolCallMode.AUTO, parallel=parallel)
        return spec.with_answer(fmt[1]) if fmt is not None else spec
    if fmt is not None:
        raise bad_request(f"{fmt[0]} cannot be combined with tool_choice {choice if isinstance(choice, str) else 'named'}"
                          ": the output must be tool calls.", param=fmt[0], code="invalid_value")
    if choice == "required":
        return GrammarSpec.tool_calls(specs, ToolCallMode.REQUIRED, parallel=parallel)
    assert not isinstance(choice, str)
    name = choice.function.name
    if name not in {s.name for s in specs}:
        raise bad_request(f"tool_choice names the function {name!r}, which is not among the tools.",
                          param="tool_choice.function.name", code="invalid_value")
    return GrammarSpec.tool_calls(specs, ToolCallMode.NAMED, name=name)


async def compile_constraint(engine: EngineClient, constraint: tuple[str, GrammarSpec] | None) -> GrammarSpec | None:
    """Compile off the engine thread (cached by the engine); a grammar that cannot compile is a 400."""
    if constraint is None:
        return None
    param, spec = constraint
    try:
        await asyncio.wrap_future(engine.compile_grammar(spec))
    except GrammarError as e:
        raise bad_request(f"{param}: {e}", param=param, code="invalid_value") from None
    except APIError:
        raise
    return spec
