"""What a request constrains its output to: `GrammarSpec`, a frozen value with a stable cache key.

The API layer builds one from `response_format` (json_object, json_schema), vLLM's
`structured_outputs` (json, regex, choice, grammar) or `tools` + `tool_choice`; the engine hands it to
a `GrammarCompiler` and never looks inside. Payloads are normalised on construction (schemas to
compact JSON text, choices and tools to tuples), so a spec is immutable and hashable, and `key`
names it for caching: equal keys compile to the same grammar.

JSON text keeps its key order (it is not sorted): object properties are generated in the order the
schema lists them, so two schemas that differ only in that order are different grammars.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Iterable, Mapping

from awqserve.errors import InvalidRequestError


class GrammarError(InvalidRequestError):
    """A spec that cannot become a grammar (bad schema, regex, grammar text or tool list).

    The message names the problem and is fit to return to the user as a 400.
    """


class GrammarKind(str, Enum):
    """The kinds of constraint a request can ask for."""

    JSON_SCHEMA = "json_schema"  # a JSON document valid against a JSON Schema (Draft 2020-12)
    JSON_OBJECT = "json_object"  # any JSON object (OpenAI's response_format json_object)
    REGEX = "regex"              # Rust `regex` crate syntax (close to Python `re`, no lookarounds)
    CHOICE = "choice"            # exactly one of a list of strings
    GRAMMAR = "grammar"          # llguidance's Lark dialect, or llama.cpp GBNF (converted)
    TOOL_CALLS = "tool_calls"    # hermes tool calls as Qwen3 emits them (see `ToolCallMode`)


class ReasoningPrefix(str, Enum):
    """What may come before the constrained output of a reasoning model (Qwen3's `<think>` blocks).

    NONE: the constraint starts at the first output token. OPTIONAL: the output may open with one
    `<think>…</think>` block (any text inside), then the constraint applies. OPEN: the prompt already
    opened `<think>` (a template that starts the reasoning itself): the output is reasoning text up to
    `</think>`, then the constraint.
    """

    NONE = "none"
    OPTIONAL = "optional"
    OPEN = "open"


class ToolCallMode(str, Enum):
    """How tool calls constrain the output (OpenAI `tool_choice`).

    REQUIRED: one or more `<tool_call>` blocks and nothing else but whitespace between and after them.
    NAMED: exactly one call, to the function `GrammarSpec.tool_name`.
    AUTO: free text; once the model emits `<tool_call>`, the call that follows is constrained, and
    after `</tool_call>` only more calls, whitespace or the end may follow.
    """

    REQUIRED = "required"
    NAMED = "named"
    AUTO = "auto"


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _schema_text(schema: Mapping[str, Any] | bool | str, what: str) -> str:
    """A schema (dict, bool or JSON text) as compact JSON text; the value must be an object or bool."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as e:
            raise GrammarError(f"{what} is not valid JSON: {e}") from None
    if not isinstance(schema, (Mapping, bool)):
        raise GrammarError(f"{what} must be a JSON object, got {type(schema).__name__}")
    return _compact_json(schema)


@dataclass(frozen=True)
class ToolSpec:
    """One function a model may call: its name and its parameters' JSON schema.

    `parameters` may be given as a dict or JSON text; it is stored as compact JSON text. A missing or
    empty schema means "any object" (OpenAI: a function without parameters still gets `{}` arguments).
    """

    name: str
    parameters: str | Mapping[str, Any] | None = None  # stored as compact JSON text

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise GrammarError("a tool needs a non-empty function name")
        params = self.parameters if self.parameters not in (None, {}, "") else {"type": "object"}
        object.__setattr__(self, "parameters", _schema_text(params, f"parameters of tool {self.name!r}"))

    @property
    def parameters_json(self) -> str:
        """The parameters schema as compact JSON text."""
        assert isinstance(self.parameters, str)  # normalised in __post_init__
        return self.parameters

    @property
    def schema(self) -> Any:
        """The parameters schema, parsed (a fresh object each call)."""
        return json.loads(self.parameters_json)


@dataclass(frozen=True)
class GrammarSpec:
    """An output constraint. Build one with the class methods; fields are normalised and validated.

    Invariants: `text` holds the schema JSON (JSON_SCHEMA), the pattern (REGEX) or the grammar
    (GRAMMAR) and is empty otherwise; `choices` is non-empty only for CHOICE; `tools`, `tool_mode`,
    `tool_name` and `parallel` matter only for TOOL_CALLS. NAMED keeps only the named tool in
    `tools` and `parallel` False, so requests naming one function share a cache entry whatever
    else they list.
    """

    kind: GrammarKind
    text: str = ""
    choices: tuple[str, ...] = ()
    tools: tuple[ToolSpec, ...] = ()
    tool_mode: ToolCallMode = ToolCallMode.AUTO
    tool_name: str | None = None
    parallel: bool = True
    answer: "GrammarSpec | None" = None  # AUTO tool calls: the format a non-call answer must have
    reasoning: ReasoningPrefix = ReasoningPrefix.NONE
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", GrammarKind(self.kind))
        object.__setattr__(self, "tool_mode", ToolCallMode(self.tool_mode))
        object.__setattr__(self, "reasoning", ReasoningPrefix(self.reasoning))
        _validate(self)
        if self.kind is GrammarKind.TOOL_CALLS and self.tool_mode is ToolCallMode.NAMED:
            object.__setattr__(self, "tools", tuple(t for t in self.tools if t.name == self.tool_name))
            object.__setattr__(self, "parallel", False)
        object.__setattr__(self, "key", _key(self))

    def __hash__(self) -> int:
        return hash(self.key)

    # -- constructors -----------------------------------------------------------------------------

    @classmethod
    def json_schema(cls, schema: Mapping[str, Any] | bool | str) -> GrammarSpec:
        return cls(GrammarKind.JSON_SCHEMA, text=_schema_text(schema, "the JSON schema"))

    @classmethod
    def json_object(cls) -> GrammarSpec:
        return cls(GrammarKind.JSON_OBJECT)

    @classmethod
    def regex(cls, pattern: str) -> GrammarSpec:
        return cls(GrammarKind.REGEX, text=pattern)

    @classmethod
    def choice(cls, choices: Iterable[str]) -> GrammarSpec:
        return cls(GrammarKind.CHOICE, choices=tuple(choices))

    @classmethod
    def grammar(cls, text: str) -> GrammarSpec:
        return cls(GrammarKind.GRAMMAR, text=text)

    @classmethod
    def tool_calls(cls, tools: Iterable[ToolSpec], mode: ToolCallMode | str = ToolCallMode.AUTO,
                   *, name: str | None = None, parallel: bool = True) -> GrammarSpec:
        return cls(GrammarKind.TOOL_CALLS, tools=tuple(tools), tool_mode=ToolCallMode(mode),
                   tool_name=name, parallel=parallel)

    def after_reasoning(self, prefix: ReasoningPrefix | str) -> GrammarSpec:
        """This constraint, applied after the reasoning block `prefix` allows (see ReasoningPrefix)."""
        return replace(self, reasoning=ReasoningPrefix(prefix))

    def with_answer(self, answer: GrammarSpec) -> GrammarSpec:
        """AUTO tool calls whose alternative to calling is an answer in the format `answer` (instead
        of free text): the output is either tool calls or that answer."""
        return replace(self, answer=answer)

    @property
    def schema(self) -> Any:
        """The JSON schema of a JSON_SCHEMA spec, parsed (a fresh object each call)."""
        return json.loads(self.text) if self.kind is GrammarKind.JSON_SCHEMA else None


def _validate(spec: GrammarSpec) -> None:
    k = spec.kind
    if k in (GrammarKind.JSON_SCHEMA, GrammarKind.REGEX, GrammarKind.GRAMMAR) and not spec.text:
        what = "pattern" if k is GrammarKind.REGEX else k.value
        raise GrammarError(f"a {k.value} constraint needs a non-empty {what}")
    if k is GrammarKind.CHOICE:
        if not spec.choices or not all(isinstance(c, str) for c in spec.choices):
            raise GrammarError("a choice constraint needs a non-empty list of strings")
    if k is GrammarKind.TOOL_CALLS:
        _validate_tools(spec)
    if spec.answer is not None:
        if k is not GrammarKind.TOOL_CALLS or spec.tool_mode is not ToolCallMode.AUTO:
            raise GrammarError("an answer format goes with tool_choice auto only")
        if spec.answer.kind is GrammarKind.TOOL_CALLS or spec.answer.reasoning is not ReasoningPrefix.NONE:
            raise GrammarError("the answer format must be a plain constraint (not tool calls)")


def _validate_tools(spec: GrammarSpec) -> None:
    names = [t.name for t in spec.tools]
    if not names:
        raise GrammarError("tool calls need at least one tool")
    if len(set(names)) != len(names):
        raise GrammarError(f"tool names must be unique, got {names}")
    if spec.tool_mode is ToolCallMode.NAMED and spec.tool_name not in names:
        raise GrammarError(f"tool_choice names {spec.tool_name!r}, which is not among the tools {names}")


def _key(spec: GrammarSpec) -> str:
    """`kind:` + compact JSON of everything that shapes the grammar (stable across processes)."""
    k = spec.kind
    if k is GrammarKind.JSON_OBJECT:
        body = ""
    elif k is GrammarKind.CHOICE:
        body = _compact_json(list(spec.choices))
    elif k is GrammarKind.TOOL_CALLS:
        tools = [{"name": t.name, "parameters": t.schema} for t in spec.tools]
        body = _compact_json({"tools": tools, "mode": spec.tool_mode.value, "name": spec.tool_name,
                              "parallel": spec.parallel})
    else:
        body = spec.text
    key = f"{k.value}:{body}"
    if spec.answer is not None:
        key += f"|answer={spec.answer.key}"
    if spec.reasoning is not ReasoningPrefix.NONE:
        key = f"reasoning={spec.reasoning.value}|{key}"
    return key
