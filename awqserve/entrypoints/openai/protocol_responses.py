"""Request models of `POST /v1/responses` (OpenAI's CreateResponse), strict like protocol.py.

Every top-level field of OpenAI's CreateResponse is declared, so an unknown key is refused by
`reject_unsupported` (400 naming it). Fields we know but do not implement are typed loosely and
refused by `refusals()` (400 naming them) unless their value is harmless: null, false, empty, or the
default. `input` items and `tools` are validated item by item (`parse_items`, `parse_tools`) after
dispatching on their `type`, so a known-but-unsupported type (an image part, a `web_search` tool)
is a 400 naming it, and a malformed supported item is a 422 naming the field (`input[2].call_id`).
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Literal, Sequence, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from awqserve.entrypoints.openai.errors import APIError, unsupported_parameter
from awqserve.entrypoints.openai.protocol import validation_error

_FORBID = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
_NAME = r"^[a-zA-Z0-9_-]{1,64}$"  # OpenAI's rule for function and schema names
Status = Literal["in_progress", "completed", "incomplete"]


class TextFormat(BaseModel):
    """`text.format`: `{type: text}`, `{type: json_object}` or `{type: json_schema, name, schema, strict?,
    description?}` (flat, unlike chat's `response_format.json_schema`)."""

    model_config = _FORBID
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(None, pattern=_NAME)
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _json_schema_fields(self) -> TextFormat:
        if self.type == "json_schema" and (self.name is None or self.schema_ is None):
            raise ValueError("a json_schema format needs 'name' and 'schema'")
        return self


class TextParam(BaseModel):
    model_config = _FORBID
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningParam(BaseModel):
    """Accepted only empty (all null): the served models have no effort levels or summaries."""

    model_config = _FORBID
    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None
    mode: str | None = None
    context: str | None = None


class StreamOptionsParam(BaseModel):
    model_config = _FORBID
    include_obfuscation: bool | None = None  # accepted; we never add obfuscation padding


class ResponsesRequest(BaseModel):
    """CreateResponse. `input` items and `tools` stay raw JSON here; `parse_items` / `parse_tools`
    validate them."""

    model_config = ConfigDict(extra="allow", strict=True)
    model: str | None = None
    input: str | list[Any]
    instructions: str | None = None
    previous_response_id: str | None = None
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextParam | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    stream: bool | None = False
    stream_options: StreamOptionsParam | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None  # a routing hint; prefix caching here is automatic
    max_tool_calls: int | None = Field(None, ge=0)  # bounds built-in tool calls, of which we have none
    # vLLM's sampling extensions (as on chat)
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(None, gt=0.0, le=10.0)
    seed: int | None = None
    # known, not implemented: refused by `refusals` unless harmless
    background: bool | None = None
    include: list[str] | None = None
    conversation: Any = None
    prompt: Any = None
    truncation: str | None = None
    reasoning: ReasoningParam | None = None
    top_logprobs: int | None = None
    service_tier: str | None = None
    context_management: Any = None
    moderation: Any = None
    prompt_cache_retention: str | None = None
    prompt_cache_options: Any = None

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is not None and (len(v) > 16 or any(len(k) > 64 or len(x) > 512 for k, x in v.items())):
            raise ValueError("metadata holds at most 16 pairs, keys of at most 64 and values of at most 512 characters")
        return v


_REFUSALS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    # (field, test of a harmful value, why)
    ("background", lambda v: v is True, "Background responses are not implemented; omit it or send false."),
    ("include", lambda v: bool(v), "No extra output data (logprobs, encrypted reasoning, tool sources) is available."),
    ("conversation", lambda v: v is not None, "Conversations are not implemented; chain with previous_response_id."),
    ("prompt", lambda v: v is not None, "Reusable prompt templates are not available; send input and instructions."),
    ("truncation", lambda v: v not in (None, "disabled"),
     "Only 'disabled' is implemented: an input over the context limit is a 400."),
    ("reasoning", lambda v: v is not None and any(x is not None for x in v.model_dump().values()),
     "Reasoning effort and summaries are not available for the served models; send null or {}."),
    ("top_logprobs", lambda v: bool(v), "Logprobs are not implemented on this endpoint (use /v1/chat/completions)."),
    ("service_tier", lambda v: v not in (None, "auto", "default"), "Only 'auto' and 'default' exist here."),
    ("context_management", lambda v: bool(v), "Server-side context compaction is not implemented."),
    ("moderation", lambda v: v is not None, "Moderation is not available."),
    ("prompt_cache_retention", lambda v: v not in (None, "in_memory"), "Only in-memory prefix caching exists here."),
    ("prompt_cache_options", lambda v: v is not None, "Prefix caching here is automatic and takes no options."),
)


def refusals(req: ResponsesRequest) -> None:
    """400 naming the first known-but-unimplemented field that carries a real value."""
    for name, harmful, why in _REFUSALS:
        if harmful(getattr(req, name)):
            raise unsupported_parameter(name, why)
    if req.text is not None and req.text.verbosity not in (None, "medium"):
        raise unsupported_parameter("text.verbosity", "Only the default 'medium' is implemented.")


# ---- input items ----

class ContentPart(BaseModel):
    """A text part: `input_text` (user, system, developer), `output_text` / `refusal` (assistant, as we
    returned them)."""

    model_config = _FORBID
    type: Literal["input_text", "output_text", "refusal"]
    text: str | None = None
    refusal: str | None = None
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None
    prompt_cache_breakpoint: Any = None  # a caching hint; prefix caching here is automatic

    @model_validator(mode="after")
    def _has_its_text(self) -> ContentPart:
        if (self.refusal if self.type == "refusal" else self.text) is None:
            raise ValueError(f"a {self.type} part needs '{'refusal' if self.type == 'refusal' else 'text'}'")
        return self

    @property
    def value(self) -> str:
        return (self.refusal if self.type == "refusal" else self.text) or ""  # set: checked above


class MessageItem(BaseModel):
    model_config = _FORBID
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    id: str | None = None
    status: Status | None = None
    phase: Any = None
    refused: ClassVar[dict[str, str]] = {"phase": "Message phases are not produced or read by this server."}


class FunctionCallItem(BaseModel):
    model_config = _FORBID
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str
    arguments: str
    id: str | None = None
    status: Status | None = None
    namespace: Any = None
    caller: Any = None
    refused: ClassVar[dict[str, str]] = {"namespace": "Tool namespaces are not implemented.",
                                         "caller": "Programmatic tool callers are not implemented."}


class FunctionCallOutputItem(BaseModel):
    model_config = _FORBID
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1, max_length=64)
    output: str | list[ContentPart]
    id: str | None = None
    status: Status | None = None
    name: str | None = None
    namespace: Any = None
    caller: Any = None
    refused: ClassVar[dict[str, str]] = FunctionCallItem.refused


class ReasoningPart(BaseModel):
    model_config = _FORBID
    type: Literal["reasoning_text", "summary_text"]
    text: str


class ReasoningInputItem(BaseModel):
    """A reasoning item we returned, sent back by a stateless client."""

    model_config = _FORBID
    type: Literal["reasoning"]
    id: str | None = None
    summary: list[ReasoningPart] = Field(default_factory=list)
    content: list[ReasoningPart] | None = None
    encrypted_content: Any = None
    status: Status | None = None
    refused: ClassVar[dict[str, str]] = {"encrypted_content": "This server neither produces nor reads encrypted "
                                                              "reasoning."}

    @property
    def text(self) -> str:
        return "\n".join(p.text for p in (self.content or self.summary))


InputItem = MessageItem | FunctionCallItem | FunctionCallOutputItem | ReasoningInputItem
_ITEM_MODELS: dict[str, type[InputItem]] = {"message": MessageItem, "function_call": FunctionCallItem,
                                            "function_call_output": FunctionCallOutputItem,
                                            "reasoning": ReasoningInputItem}
_TEXT_PARTS = ("input_text", "output_text", "refusal")


class FunctionTool(BaseModel):
    """Responses' flat function tool: `{type: "function", name, description?, parameters?, strict?}`."""

    model_config = _FORBID
    type: Literal["function"]
    name: str = Field(pattern=_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    defer_loading: Any = None
    output_schema: Any = None
    allowed_callers: Any = None
    refused: ClassVar[dict[str, str]] = {"defer_loading": "Deferred tool loading is not implemented.",
                                         "output_schema": "Tool output schemas are not implemented.",
                                         "allowed_callers": "Programmatic tool callers are not implemented."}


M = TypeVar("M", bound=BaseModel)


def _validate(model: type[M], raw: Any, loc: tuple[str | int, ...]) -> M:
    """`model` from `raw`; a schema error is a 422 whose `param` starts at `loc` and names the deepest
    failure (of a union such as `str | list[part]`, the member the client evidently meant)."""
    try:
        obj = model.model_validate(raw)
    except ValidationError as e:
        errors = sorted(e.errors(), key=lambda err: -len(err["loc"]))
        raise validation_error([{**err, "loc": (*loc, *err["loc"])} for err in errors]) from None
    for name, why in getattr(model, "refused", {}).items():
        if getattr(obj, name) not in (None, False):
            raise unsupported_parameter(f"{loc[0]}[{loc[1]}].{name}", why)
    return obj


def _item_type(raw: Any, loc: tuple[str | int, ...]) -> str:
    if not isinstance(raw, dict):
        raise APIError(422, f"Invalid value for '{loc[0]}[{loc[1]}]': must be an object.",
                       param=f"{loc[0]}[{loc[1]}]", code="invalid_type")
    kind = raw.get("type", "message")
    return kind if isinstance(kind, str) else repr(kind)


def parse_items(raw_items: Sequence[Any], field: str = "input") -> list[InputItem]:
    """Input items → models. Unsupported item or content types are 400s naming them."""
    out: list[InputItem] = []
    for i, raw in enumerate(raw_items):
        kind = _item_type(raw, (field, i))
        model = _ITEM_MODELS.get(kind)
        if model is None:
            raise unsupported_parameter(f"{field}[{i}].type", f"Input items of type {kind!r} are not supported; "
                                        "send message, function_call, function_call_output or reasoning items.")
        _text_parts_only(raw, f"{field}[{i}]", "content" if kind == "message" else "output")
        out.append(_validate(model, raw, (field, i)))
    return out


def _text_parts_only(raw: dict[str, Any], where: str, key: str) -> None:
    parts = raw.get(key)
    for j, part in enumerate(parts if isinstance(parts, list) else []):
        if isinstance(part, dict) and "type" in part and part["type"] not in _TEXT_PARTS:
            raise unsupported_parameter(f"{where}.{key}[{j}].type",
                                        f"Only text content is supported, got {part.get('type')!r}.")


def parse_tools(raw_tools: Sequence[Any]) -> list[FunctionTool]:
    """Tools → function tools; built-in tools (web_search, file_search, mcp, …) are 400s naming them."""
    out = []
    for i, raw in enumerate(raw_tools):
        kind = _item_type(raw, ("tools", i))
        if kind != "function":
            raise unsupported_parameter(f"tools[{i}].type", f"Only function tools are supported, got {kind!r} "
                                        "(built-in tools are not available on this server).")
        out.append(_validate(FunctionTool, raw, ("tools", i)))
    return out
