"""Tools and tool history → what the chat template renders.

A template that knows tools (Qwen3's, any template mentioning `tools`) receives them as
`apply_chat_template(..., tools=[...])` and the history as OpenAI-shaped dicts (assistant
`tool_calls` with `arguments` parsed to objects, `tool` messages with `tool_call_id`), which is what
Hugging Face templates expect. A template that knows no tools (the demo model's) gets the documented
fallback instead (docs/HTTP_API.md "Tools on templates without tool support"): a system message
describing the functions and the hermes format, earlier calls rendered as `<tool_call>` text in the
assistant turn, and tool results as `<tool_response>` text in a user turn — the same conventions
Qwen3's own template uses, so the model output is parsed the same way.

Malformed history (a tool result answering no earlier call, arguments that are not a JSON object)
is a 400 naming the message, never a template crash.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from awqserve.entrypoints.openai.errors import bad_request, unsupported_parameter
from awqserve.entrypoints.openai.protocol import ChatMessage
from awqserve.entrypoints.openai.protocol_agents import ChatTool

FALLBACK_SYSTEM = (
    "# Tools\n\nThese functions are available (JSON signatures, one per line):\n<tools>\n{tools}\n</tools>\n\n"
    "To use one, answer with only this block, one per call:\n<tool_call>\n"
    "{{\"name\": \"<function name>\", \"arguments\": {{<arguments as a JSON object>}}}}\n</tool_call>\n"
    "Results come back inside <tool_response></tool_response>. Otherwise, answer normally.")


@dataclass(frozen=True)
class RenderedTools:
    """Template inputs: the messages, and `tools` for templates that render them (None otherwise)."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None


def tool_dicts(tools: list[ChatTool]) -> list[dict[str, Any]]:
    """Tools as OpenAI dicts (what templates iterate over); only function tools are served."""
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        if tool.type != "function":
            raise unsupported_parameter(f"tools[{i}].type", f"Only function tools are supported, got {tool.type!r}.")
        fn = tool.function.model_dump(exclude_none=True)
        fn.setdefault("parameters", {"type": "object", "properties": {}})
        out.append({"type": "function", "function": fn})
    names = [t["function"]["name"] for t in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise bad_request(f"Two tools are named {dup!r}; tool names must be unique.", param="tools",
                          code="invalid_value")
    return out


def history_dicts(messages: list[ChatMessage], base: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add tool history to the template dicts `base` (one per message): parsed call arguments, checked ids."""
    seen: set[str] = set()
    out = []
    for i, (msg, item) in enumerate(zip(messages, base)):
        item = dict(item)
        if msg.tool_calls:
            if msg.role != "assistant":
                raise bad_request(f"messages[{i}] has tool_calls but role {msg.role!r}; only assistant messages "
                                  "carry tool calls.", param=f"messages[{i}].tool_calls", code="invalid_value")
            item["tool_calls"] = [_call_dict(i, j, c) for j, c in enumerate(msg.tool_calls)]
            seen.update(c.id for c in msg.tool_calls)
        if msg.role == "tool":
            if not msg.tool_call_id:
                raise bad_request(f"messages[{i}] has role 'tool' but no tool_call_id.",
                                  param=f"messages[{i}].tool_call_id", code="missing_required_parameter")
            if msg.tool_call_id not in seen:
                raise bad_request(f"messages[{i}].tool_call_id {msg.tool_call_id!r} answers no tool call of an "
                                  "earlier assistant message.", param=f"messages[{i}].tool_call_id",
                                  code="invalid_value")
            item["tool_call_id"] = msg.tool_call_id
        out.append(item)
    return out


def _call_dict(i: int, j: int, call: Any) -> dict[str, Any]:
    try:
        args = json.loads(call.function.arguments) if call.function.arguments.strip() else {}
    except json.JSONDecodeError as e:
        raise bad_request(f"messages[{i}].tool_calls[{j}].function.arguments is not valid JSON: {e.msg}.",
                          param=f"messages[{i}].tool_calls[{j}].function.arguments", code="invalid_value") from None
    if not isinstance(args, dict):
        raise bad_request(f"messages[{i}].tool_calls[{j}].function.arguments must be a JSON object.",
                          param=f"messages[{i}].tool_calls[{j}].function.arguments", code="invalid_value")
    return {"id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": args}}


def template_knows_tools(template: str | None) -> bool:
    """Whether a chat template renders `tools` itself (it refers to the variable)."""
    return bool(template) and "tools" in str(template)


def render(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, knows_tools: bool) -> RenderedTools:
    """Template inputs for a conversation with (possibly) tools and tool history."""
    has_history = any(m.get("tool_calls") or m.get("role") == "tool" for m in messages)
    if knows_tools or not (tools or has_history):
        return RenderedTools(messages, tools if tools else None)
    return RenderedTools(_fallback(messages, tools or []), None)


def _fallback(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = [_as_text(m) for m in messages]
    if tools:
        spec = FALLBACK_SYSTEM.format(tools="\n".join(json.dumps(t, ensure_ascii=False) for t in tools))
        if out and out[0]["role"] in ("system", "developer"):
            out[0] = {**out[0], "role": "system", "content": f"{out[0]['content']}\n\n{spec}"}
        else:
            out.insert(0, {"role": "system", "content": spec})
    return _merge_tool_turns(out)


def _as_text(m: dict[str, Any]) -> dict[str, Any]:
    """One message with its tool parts as hermes-format text, for templates that know only content."""
    if m.get("role") == "tool":
        return {"role": "user", "content": f"<tool_response>\n{m.get('content') or ''}\n</tool_response>"}
    calls = m.get("tool_calls")
    if not calls:
        return {k: v for k, v in m.items() if k not in ("tool_calls", "tool_call_id")}
    text = [m.get("content") or ""]
    for c in calls:
        body = {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
        text.append(f"<tool_call>\n{json.dumps(body, ensure_ascii=False)}\n</tool_call>")
    return {"role": "assistant", "content": "\n".join(t for t in text if t)}


def _merge_tool_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive tool results become one user turn (as Qwen's template groups them)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        prev = out[-1] if out else None
        if (prev is not None and prev["role"] == "user" and m["role"] == "user"
                and str(prev["content"]).startswith("<tool_response>")
                and str(m["content"]).startswith("<tool_response>")):
            out[-1] = {**prev, "content": f"{prev['content']}\n{m['content']}"}
        else:
            out.append(m)
    return out
