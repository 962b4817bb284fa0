"""A chat request as the model sees it: rendered prompt, output parsers and output constraint.

`build_conversation` gathers everything the request's messages, tools, tool choice, template
arguments and structured-output fields decide, before anything reaches the engine:
- the prompt: tool definitions and tool history rendered by the template (or the fallback prompt,
  chat_tools.py), `chat_template_kwargs` passed through;
- the parsers of each choice's output: hermes tool calls when tools are offered (not for
  `tool_choice: "none"`), reasoning when the server runs with `--reasoning-parser`;
- the grammar the output is constrained to (structured_request.py), if any.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from awqserve.entrypoints.openai import chat_tools
from awqserve.entrypoints.openai.errors import bad_request
from awqserve.entrypoints.openai.protocol import ChatCompletionRequest
from awqserve.entrypoints.openai.serving_base import Prepared
from awqserve.entrypoints.openai.structured_request import chat_constraint
from awqserve.entrypoints.openai.tokenization import content_chars, messages_to_dicts
from awqserve.parsers import ChatOutputParser, Qwen3ReasoningParser, build_chat_parser
from awqserve.structured import GrammarSpec

# arguments the serving layer itself passes to the template
_RESERVED_TEMPLATE_KWARGS = {"messages", "tools", "add_generation_prompt", "chat_template", "tokenize",
                             "documents", "continue_final_message"}


@dataclass(frozen=True)
class Conversation:
    prompt: list[int]
    prompt_text: str
    tool_parser: str | None  # None: tool calls are not parsed (no tools, or tool_choice "none")
    reasoning_parser: str | None
    starts_in_reasoning: bool
    constraint: tuple[str, GrammarSpec] | None  # (request field that asked for it, the grammar)

    @property
    def reasoning(self) -> bool:
        return self.reasoning_parser is not None

    def parser(self) -> ChatOutputParser:
        """A fresh output parser for one choice."""
        return build_chat_parser(self.tool_parser, self.reasoning_parser, starts_in_reasoning=self.starts_in_reasoning)


def build_conversation(p: Prepared[ChatCompletionRequest]) -> Conversation:
    req, cfg = p.req, p.state.config
    tools = chat_tools.tool_dicts(req.tools) if req.tools else []
    use_tools = bool(tools) and req.tool_choice != "none"
    if req.tool_choice not in (None, "none") and not tools:
        raise bad_request("tool_choice is only allowed when tools are given.", param="tool_choice",
                          code="invalid_value")
    p.tok.check_length(content_chars(req.messages), p.info.max_model_len, "messages")
    messages = chat_tools.history_dicts(req.messages, messages_to_dicts(req.messages))
    knows = chat_tools.template_knows_tools(p.tok.chat_template)
    rendered = chat_tools.render(messages, tools if use_tools else None, knows)
    text, prompt = p.tok.render_chat(rendered.messages, req.add_generation_prompt, tools=rendered.tools,
                                     template_kwargs=_template_kwargs(req))
    reasoning = cfg.reasoning_parser
    starts = reasoning is not None and Qwen3ReasoningParser.prompt_opens_reasoning(text)
    constraint = chat_constraint(req, tools if use_tools else [], reasoning=reasoning is not None,
                                 starts_in_reasoning=starts)
    return Conversation(prompt, text, cfg.tool_parser_name if use_tools else None, reasoning, starts, constraint)


def _template_kwargs(req: ChatCompletionRequest) -> dict[str, Any]:
    kwargs = dict(req.chat_template_kwargs or {})
    clash = sorted(_RESERVED_TEMPLATE_KWARGS & kwargs.keys())
    if clash:
        raise bad_request(f"chat_template_kwargs may not set {clash[0]!r}: the server passes it itself.",
                          param=f"chat_template_kwargs.{clash[0]}", code="invalid_value")
    return kwargs
