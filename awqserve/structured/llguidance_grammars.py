"""GrammarSpec → llguidance grammar text (pure string building; no tokenizer, no llguidance calls).

Choices made here, per kind:
- JSON_SCHEMA: the schema as written, with JSON Schema semantics (Draft 2020-12), as llguidance
  implements them: a missing `additionalProperties` allows extra keys (unlike xgrammar's strict
  mode); properties come out in the schema's order; unsupported keywords or formats are errors.
  Whitespace between JSON tokens is bounded (`max_whitespace` characters at each place JSON allows
  it, default 16), so a model cannot loop on newlines forever; a schema's own top-level
  `"x-guidance"` options override this.
- JSON_OBJECT: the schema `{"type": "object"}` with the same whitespace bound.
- REGEX: Rust `regex` syntax; the whole output must match (implicitly anchored).
- CHOICE: a Lark alternation of JSON-quoted literals (any characters, exactly one choice).
- GRAMMAR: llguidance's Lark dialect; text in llama.cpp GBNF (`root ::= ...`) is converted to it.
- TOOL_CALLS: Lark for Qwen3's hermes format, see `tool_calls_lark`. Tool parameter schemas compile
  leniently (unsupported keywords are ignored rather than failing the whole request), because tool
  schemas come from frameworks, not from the user asking for an exact format.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from awqserve.structured.spec import GrammarError, GrammarKind, GrammarSpec, ReasoningPrefix, ToolCallMode

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
# Between and after calls: a few newlines/spaces, bounded so whitespace cannot run on forever.
_WS = "WS: /[ \\t\\r\\n]{1,8}/\n"
_TEXT = "TEXT: /(?s:.+)/\n"


@dataclass(frozen=True)
class TokenizerTraits:
    """What the grammar text needs to know about the tokenizer.

    `open_is_token` / `close_is_token`: `<tool_call>` / `</tool_call>` is a single added token
    (Qwen3), which llguidance treats as a special token, so the grammar must name it as a token:
    its text spelled out would not match it.
    `text_token_ids`: added tokens that the HF tokenizer calls non-special (e.g. Qwen3's `<think>`),
    which llguidance also treats as special; free text in AUTO mode may contain them.
    """

    open_is_token: bool = False
    close_is_token: bool = False
    text_token_ids: tuple[int, ...] = ()
    think_ids: tuple[int, int] | None = None  # (<think>, </think>) when both are single special tokens


def json_options(max_whitespace: int | None) -> dict[str, Any]:
    """llguidance JSON options: whitespace bounded to `max_whitespace` chars per place (None: unbounded)."""
    if max_whitespace is None:
        return {"whitespace_flexible": True}
    return {"whitespace_pattern": f"[\\x20\\x0A\\x0D\\x09]{{1,{max_whitespace}}}"}


def _literal(text: str) -> str:
    """A Lark string literal (JSON quoting: llguidance reads JSON escapes in "...")."""
    return json.dumps(text, ensure_ascii=False)


def choice_lark(choices: tuple[str, ...]) -> str:
    return "start: " + " | ".join(_literal(c) for c in choices) + "\n"


def _call_schema(spec: GrammarSpec, max_whitespace: int | None) -> dict[str, Any]:
    """One JSON schema for `{"name": <tool>, "arguments": <its parameters>}` over every tool."""
    calls = [{"type": "object",
              "properties": {"name": {"const": t.name}, "arguments": t.schema},
              "required": ["name", "arguments"], "additionalProperties": False} for t in spec.tools]
    options = dict(json_options(max_whitespace), lenient=True)
    return {"anyOf": calls, "x-guidance": options}


def tool_calls_lark(spec: GrammarSpec, traits: TokenizerTraits, max_whitespace: int | None) -> str:
    """Lark text for hermes tool calls: `<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>`.

    REQUIRED: calls only (whitespace between and after); NAMED: one call to the one tool left in
    `spec.tools`; AUTO: optional free text, then optionally calls. `parallel=False` allows one call.
    With text markers, AUTO's free text and the trigger form one lazy lexeme that ends at the first
    `<tool_call>`; with token markers the trigger token itself ends the text.
    """
    # Lark `<name>` is the special token of that name; a quoted string is text
    open_ = CALL_OPEN if traits.open_is_token else _literal(CALL_OPEN)
    close = CALL_CLOSE if traits.close_is_token else _literal(CALL_CLOSE)
    calls = "rest (WS? call)* WS?" if spec.parallel else "rest WS?"
    rules = (f"call: {open_} rest\n"
             f'rest: "\\n" body "\\n" {close}\n'
             f"body: %json {json.dumps(_call_schema(spec, max_whitespace), ensure_ascii=False)}\n" + _WS)
    if spec.tool_mode is not ToolCallMode.AUTO:
        return rules + f"start: {open_} {calls}\n"
    if traits.open_is_token:
        free = _free_text_rule(traits)
        return rules + free + f"start: free? | free? {open_} {calls}\n"
    lead = f"lead[lazy]: /(?s:.*){CALL_OPEN}/\n"
    return rules + _TEXT + lead + f"start: TEXT? | lead {calls}\n"


def _free_text_rule(traits: TokenizerTraits, name: str = "free", exclude: tuple[int, ...] = ()) -> str:
    """`free`: any text, plus the tokenizer's text-like added tokens (but never the call markers, nor
    `exclude`)."""
    ids = [i for i in traits.text_token_ids if i not in exclude]
    if not ids:
        return _TEXT + f"{name}: TEXT\n"
    return _TEXT + f"{name}: (TEXT | <[{','.join(str(i) for i in ids)}]>)+\n"


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def reasoning_lark(prefix: ReasoningPrefix, traits: TokenizerTraits) -> str:
    """Lark `start` for "a reasoning block, then `@inner`" (ReasoningPrefix OPTIONAL / OPEN).

    Text markers: the block is one lazy lexeme ending at the first `</think>`. Token markers (Qwen3):
    the block is `<think>` free text `</think>` as tokens, the free text never containing the markers.
    Whitespace after the block is bounded like the gaps between tool calls.
    """
    if traits.think_ids is None:
        lead = "[ \\t\\r\\n]*<think>" if prefix is ReasoningPrefix.OPTIONAL else ""
        block = f"think[lazy]: /{lead}(?s:.*)<\\/think>/\n"
        start = "think? WS? @inner" if prefix is ReasoningPrefix.OPTIONAL else "think WS? @inner"
        return f"start: {start}\n{block}{_WS}"
    free = _free_text_rule(traits, "thought", exclude=traits.think_ids)
    if prefix is ReasoningPrefix.OPTIONAL:
        return f"start: (WS? {THINK_OPEN} thought? {THINK_CLOSE})? WS? @inner\n{free}{_WS}"
    return f"start: thought? {THINK_CLOSE} WS? @inner\n{free}{_WS}"


def compose(start_lark: str, parts: dict[str, str]) -> str:
    """One llguidance grammar (JSON text) whose entry is `start_lark`, referring to each of `parts`
    (name → a grammar's JSON text, as `llguidance.grammar_from` returns) as `@name`."""
    grammars: list[dict[str, Any]] = [{"lark_grammar": start_lark}]
    for name, text in parts.items():
        # llguidance hands Lark sources back as plain text, the other formats as grammar JSON
        sub = list(json.loads(text)["grammars"]) if text.lstrip().startswith("{") else [{"lark_grammar": text}]
        sub[0] = {**sub[0], "name": name}  # a grammar's first entry is its start
        grammars.extend(sub)
    return json.dumps({"grammars": grammars}, ensure_ascii=False)


ANSWER_OR_CALLS = "start: @calls | @answer\n"
"""AUTO tool calls with an answer format: either calls (as in REQUIRED) or the answer."""


def grammar_source(spec: GrammarSpec, traits: TokenizerTraits,
                   max_whitespace: int | None) -> tuple[str, str | dict[str, Any]]:
    """(format, source) for `spec`: format is "json_schema" (source: schema dict), "regex", "lark"
    or "grammar" (Lark or GBNF text, converted by llguidance). Raises GrammarError for `false`."""
    k = spec.kind
    if k is GrammarKind.JSON_SCHEMA:
        schema = spec.schema
        if schema is False:
            raise GrammarError("invalid JSON schema: the schema `false` admits no document")
        return "json_schema", {} if schema is True else schema  # `true` means any value, as `{}`
    if k is GrammarKind.JSON_OBJECT:
        return "json_schema", {"type": "object"}
    if k is GrammarKind.REGEX:
        return "regex", spec.text
    if k is GrammarKind.CHOICE:
        return "lark", choice_lark(spec.choices)
    if k is GrammarKind.GRAMMAR:
        return "grammar", spec.text
    return "lark", tool_calls_lark(spec, traits, max_whitespace)
