"""Request models for what agents send: tools, tool choice, tool history, response formats, and vLLM's
structured-output fields (current `structured_outputs` and the older `guided_*` aliases).

Shapes follow OpenAI's published schema (ChatCompletionTool, ChatCompletionNamedToolChoice,
ResponseFormatJsonSchema, ChatCompletionMessageToolCall) and vLLM's StructuredOutputsParams. Unknown
keys inside these objects are 422s naming them (`extra="forbid"`), so a misspelt field never silently
does nothing.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_FORBID = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
_NAME = r"^[a-zA-Z0-9_-]{1,64}$"  # OpenAI's rule for function names


class FunctionDefinition(BaseModel):
    model_config = _FORBID
    name: str = Field(pattern=_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatTool(BaseModel):
    """`{"type": "function", "function": {...}}`; other tool types are refused by the endpoint (400)."""

    model_config = _FORBID
    type: str = "function"
    function: FunctionDefinition


class NamedFunction(BaseModel):
    model_config = _FORBID
    name: str


class NamedToolChoice(BaseModel):
    model_config = _FORBID
    type: Literal["function"] = "function"
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class ToolCallFunction(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str
    arguments: str  # JSON text, as the API returns it


class MessageToolCall(BaseModel):
    """An assistant message's earlier call, echoed back by the client in the conversation."""

    model_config = ConfigDict(extra="forbid", strict=True)
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class JsonSchemaFormat(BaseModel):
    model_config = _FORBID
    name: str = Field(pattern=_NAME)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """`text` | `json_object` | `json_schema` (with `json_schema`)."""

    model_config = _FORBID
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StructuredOutputs(BaseModel):
    """vLLM's `structured_outputs`: exactly one of json / regex / choice / grammar / json_object."""

    model_config = ConfigDict(extra="forbid", strict=True)
    json_: dict[str, Any] | str | None = Field(None, alias="json")
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None

    @field_validator("choice")
    @classmethod
    def _choices(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("choice must list at least one string")
        return v


class StructuredFields(BaseModel):
    """The structured-output fields shared by chat and completions (mixed into both request models)."""

    structured_outputs: StructuredOutputs | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    guided_decoding_backend: str | None = None  # accepted when it names our backend (or "auto")
