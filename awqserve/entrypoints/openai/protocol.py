"""Request models (pydantic v2, strict types) and the translation of validation failures into envelopes.

Unknown top-level fields are kept (`extra="allow"`) so that `reject_unsupported` can answer a clear 400
naming them instead of silently ignoring them; schema violations (types, ranges) are 422 with `param`
naming the field, e.g. `messages[0].role`.
"""
from __future__ import annotations

from typing import Any, Literal, Mapping, Sequence, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from awqserve.entrypoints.openai.errors import APIError, bad_request, unsupported_parameter
from awqserve.entrypoints.openai.protocol_agents import (ChatTool, MessageToolCall, ResponseFormat, StructuredFields,
                                                         ToolChoice)

_STRICT = ConfigDict(extra="allow", strict=True)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool | None = False
    include_obfuscation: bool | None = None  # accepted; we never add obfuscation padding


class ContentPart(BaseModel):
    model_config = _STRICT
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """One message; other keys are passed through to the chat template untouched. `tool_calls` (assistant)
    and `tool_call_id` (tool) carry an agent's tool history; `reasoning_content` / `reasoning` are what we
    returned earlier (templates decide whether to show them again)."""

    model_config = _STRICT
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[MessageToolCall] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None


class SamplingRequest(StructuredFields):
    """Fields shared by chat and completions (OpenAI's plus vLLM's sampling extensions)."""

    model_config = _STRICT
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    n: int = Field(1, ge=1, le=128)
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(None, gt=0.0, le=10.0)
    logit_bias: dict[str, float] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0)
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False

    @field_validator("logit_bias")
    @classmethod
    def _bias_range(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for key, bias in (v or {}).items():
            if not key.lstrip("-").isdigit():
                raise ValueError(f"logit_bias keys must be token ids, got {key!r}")
            if not -100.0 <= bias <= 100.0:
                raise ValueError(f"logit_bias values must be in [-100, 100], got {bias}")
        return v

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0)
    add_generation_prompt: bool = True
    tools: list[ChatTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    chat_template_kwargs: dict[str, Any] | None = None

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool | None = False
    logprobs: int | None = Field(None, ge=0)
    best_of: int | None = Field(None, ge=1)
    add_special_tokens: bool = True


class TokenizeRequest(BaseModel):
    """vLLM's /tokenize: either `prompt` (completions style) or `messages` (chat style)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool | None = None
    add_generation_prompt: bool = True
    return_token_strs: bool = False


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    model: str | None = None
    tokens: list[int]


# ---- parsing and validation errors ----

_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "union", "ContentPart", "ChatMessage",
              "StreamOptions", "NamedToolChoice", "literal['none','auto','required']"}


def _is_union_tag(part: object) -> bool:
    """pydantic puts the union member it tried into `loc` ('str', 'list[int]'); not a field name."""
    return isinstance(part, str) and ("[" in part or part in _TYPE_TAGS or part.startswith("function-"))


def format_loc(loc: tuple[Any, ...]) -> str | None:
    out = ""
    for part in loc:
        if _is_union_tag(part):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None


_CODES = {"missing": "missing_required_parameter", "extra_forbidden": "unknown_parameter"}


def validation_error(errors: Sequence[Mapping[str, Any]]) -> APIError:
    """422 for the first schema error (after dropping union noise), naming the field in `param`."""
    first = errors[0]
    param = format_loc(tuple(first.get("loc", ())))
    kind = str(first.get("type", "invalid"))
    code = _CODES.get(kind, "invalid_type" if kind.endswith("_type") else "invalid_value")
    where = f" for '{param}'" if param else ""
    message = f"Invalid value{where}: {first.get('msg', 'invalid')}"
    if param is None and kind == "model_type":
        message = "The request body must be a JSON object."
    return APIError(422, message, param=param, code=code)


M = TypeVar("M", bound=BaseModel)


def parse_body(raw: bytes, model: type[M]) -> M:
    """Bytes → validated request. Not JSON → 400; wrong shape/types/ranges → 422."""
    if not raw.strip():
        raise bad_request("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        errors = list(e.errors())
        bad_json = [err for err in errors if err.get("type") == "json_invalid"]
        if bad_json:  # pydantic's reason says where and why: "lone leading surrogate ... at line 1 column 40"
            why = str(bad_json[0].get("ctx", {}).get("error", "")) or "syntax error"
            raise bad_request("We could not parse the JSON body of your request: it is not valid JSON "
                              f"({why}).", code="invalid_json") from None
        raise validation_error(errors) from None


# ---- parameters we know but do not implement: refused by name ----

_WHY = {
    "functions": "The deprecated 'functions' parameter is not supported; send 'tools' instead.",
    "function_call": "The deprecated 'function_call' parameter is not supported; send 'tool_choice' instead.",
    "suffix": "Insertion (suffix) is not implemented.",
}


def _harmless(name: str, value: Any, extras: dict[str, Any]) -> bool:
    """Values equivalent to leaving the parameter out (what many clients send by default)."""
    if value is None:
        return True
    if name in ("store",):
        return value is False
    if name in ("metadata",):
        return isinstance(value, dict)
    if name == "service_tier":
        return value in ("auto", "default")
    return False


def reject_unsupported(req: BaseModel) -> None:
    """400 naming the first unsupported (unknown or unimplemented) parameter that has a real value."""
    extras = dict(req.model_extra or {})
    for name, value in extras.items():
        if not _harmless(name, value, extras):
            raise unsupported_parameter(name, _WHY.get(name, ""))
