"""The structured-output workloads of bench/structured_backends.py: a grammar and one valid answer each.

Each workload says how each library expresses it (llguidance: JSON schema / regex / Lark text;
xgrammar: JSON schema / regex / EBNF / structural tag) and how awqserve's GrammarSpec does.
Answers are what a model would plausibly emit, formatted as Qwen3 does (", " and ": " separators).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

PERSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "role": {"enum": ["admin", "user", "guest"]},
        "address": {
            "type": "object",
            "properties": {
                "street": {"type": "string"},
                "city": {"type": "string"},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["street", "city"],
            "additionalProperties": False,
        },
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 8},
        "scores": {"type": "array", "items": {"type": "number"}},
        "active": {"type": "boolean"},
    },
    "required": ["name", "age", "role", "address", "tags"],
    "additionalProperties": False,
}
PERSON_ANSWER = ('{"name": "Ada Lovelace", "age": 36, "role": "admin", "address": {"street": '
                 '"12 St James\'s Square", "city": "London", "zip": "10001"}, "tags": ["math", '
                 '"engines", "poetry"], "scores": [9.5, 8.75], "active": true}')

ORDER_ANSWER = ('{"id": 42, "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}], '
                '"note": "leave it at the door", "paid": false, "total": 19.99}')

EMAIL_REGEX = r"[a-z0-9._%+-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,6}"

TOOLS: list[dict[str, Any]] = [
    {"name": "get_weather", "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city"], "additionalProperties": False}},
    {"name": "search_web", "parameters": {
        "type": "object",
        "properties": {"query": {"type": "string"},
                       "max_results": {"type": "integer", "minimum": 1, "maximum": 20}},
        "required": ["query"], "additionalProperties": False}},
    {"name": "send_email", "parameters": {
        "type": "object",
        "properties": {"to": {"type": "string"}, "subject": {"type": "string"}, "body": {"type": "string"}},
        "required": ["to", "subject", "body"], "additionalProperties": False}},
]
CALL_WEATHER = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": '
                '"celsius"}}\n</tool_call>')
CALL_SEARCH = ('<tool_call>\n{"name": "search_web", "arguments": {"query": "Paris museums open on '
               'Monday", "max_results": 5}}\n</tool_call>')


@dataclass(frozen=True)
class Workload:
    """One grammar and one answer it accepts; `mode` is only for tool calls."""

    name: str
    kind: str  # json_schema | json_object | regex | choice | tool_calls
    payload: Any
    answer: str
    mode: str = ""
    tools: list[dict[str, Any]] = field(default_factory=list)

    def _call_schema(self) -> dict[str, Any]:
        return {"anyOf": [{"type": "object", "properties": {"name": {"const": t["name"]},
                                                            "arguments": t["parameters"]},
                           "required": ["name", "arguments"], "additionalProperties": False}
                          for t in self.tools]}

    def lark(self, special_markers: bool) -> str:
        """llguidance Lark text for the hermes tool-call workloads (same shape as awqserve's).

        `special_markers`: the tokenizer has `<tool_call>`/`</tool_call>` as added tokens (Qwen3),
        which llguidance treats as special tokens, so the grammar names them as tokens, not text.
        """
        open_, close = ("<tool_call>", "</tool_call>") if special_markers else ('"<tool_call>"', '"</tool_call>"')
        head = f'call: {open_} rest\nrest: "\\n" body "\\n" {close}\n' \
               f"body: %json {json.dumps(self._call_schema())}\nWS: /[ \\t\\r\\n]+/\n"
        if self.mode == "required":
            return head + "start: call (WS? call)* WS?\n"
        # TEXT is any text; a negated regex (no "<tool_call>" inside) would cost ~2 ms per mask
        text = "TEXT: /(?s:.+)/\n"
        if special_markers:  # a special token ends TEXT by itself: it is not text
            return head + text + "start: TEXT? | TEXT? call (WS? call)* WS?\n"
        # free text up to and including the trigger is one lazy lexeme: it ends at the first "<tool_call>"
        lead = 'lead[lazy]: /(?s:.*)<tool_call>/\n'
        return head + text + lead + "start: TEXT? | lead rest (WS? call)* WS?\n"

    def xgrammar_tag(self) -> dict[str, Any]:
        """xgrammar structural tag: the Qwen3 layout its own builtin "qwen_3" template uses."""
        tags = [{"type": "tag", "begin": f'<tool_call>\n{{"name": "{t["name"]}", "arguments": ',
                 "content": {"type": "json_schema", "json_schema": t["parameters"]},
                 "end": "}\n</tool_call>"} for t in self.tools]
        if self.mode == "required":
            fmt = {"type": "tags_with_separator", "tags": tags, "separator": "\n", "at_least_one": True}
        else:
            fmt = {"type": "triggered_tags", "triggers": ["<tool_call>"], "tags": tags}
        return {"type": "structural_tag", "format": fmt}

    def spec(self, st: Any) -> Any:
        """The awqserve GrammarSpec for this workload (`st` is the awqserve.structured module)."""
        if self.kind == "tool_calls":
            tools = tuple(st.ToolSpec(t["name"], t["parameters"]) for t in self.tools)
            return st.GrammarSpec.tool_calls(tools, mode=self.mode)
        factory = {"json_schema": st.GrammarSpec.json_schema, "json_object": lambda _: st.GrammarSpec.json_object(),
                   "regex": st.GrammarSpec.regex, "choice": st.GrammarSpec.choice}[self.kind]
        return factory(self.payload)


WORKLOADS: list[Workload] = [
    Workload("json_schema", "json_schema", PERSON_SCHEMA, PERSON_ANSWER),
    Workload("json_object", "json_object", {"type": "object"}, ORDER_ANSWER),
    Workload("regex", "regex", EMAIL_REGEX, "ada.lovelace@analytical-engines.co.uk"),
    Workload("choice", "choice", ["positive", "negative", "neutral", "mixed"], "negative"),
    Workload("tools_required", "tool_calls", None, CALL_WEATHER + "\n" + CALL_SEARCH, "required", TOOLS),
    Workload("tools_auto", "tool_calls", None, "I'll look that up for you.\n" + CALL_WEATHER, "auto", TOOLS),
]
