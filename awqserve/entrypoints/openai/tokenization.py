"""The server's view of the engine's tokenizer: prompt encoding, chat templates, and per-token text/bytes.

Token strings and bytes (for logprobs) are cached per id: they are asked for once per generated
token when logprobs are on.
"""
from __future__ import annotations

import re
from functools import cached_property, lru_cache
from typing import Any

from awqserve.entrypoints.openai.errors import bad_request, prompt_too_long, unsupported_parameter
from awqserve.entrypoints.openai.protocol import ChatMessage
from awqserve.errors import AwqServeError
from awqserve.loader.tokenizer import render_chat_template

_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """Inverse of the byte-level BPE alphabet: printable bytes map to themselves, the rest to 256+."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def messages_to_dicts(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Request messages → chat-template dicts. Content parts must be text (joined by newlines)."""
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        _check_content(i, msg)
        item: dict[str, Any] = {"role": msg.role, **(msg.model_extra or {})}
        if isinstance(msg.content, list):
            texts = []
            for j, part in enumerate(msg.content):
                if part.type != "text" or part.text is None:
                    raise unsupported_parameter(f"messages[{i}].content[{j}].type",
                                                f"Only text content parts are supported, got {part.type!r}.")
                texts.append(part.text)
            item["content"] = "\n".join(texts)
        else:
            item["content"] = msg.content or ""
        if msg.name is not None:
            item["name"] = msg.name
        # earlier reasoning goes to the template, which decides (Qwen3's drops it from older turns)
        reasoning = msg.reasoning_content if msg.reasoning_content is not None else msg.reasoning
        if reasoning is not None:
            item["reasoning_content"] = reasoning
        out.append(item)
    return out


def content_chars(messages: list[ChatMessage]) -> int:
    """Characters of text in the messages' contents (what a chat template copies into the prompt)."""
    total = 0
    for msg in messages:
        if isinstance(msg.content, str):
            total += len(msg.content)
        elif msg.content:
            total += sum(len(part.text or "") for part in msg.content)
    return total


def _check_content(i: int, msg: ChatMessage) -> None:
    """OpenAI's rule: every message has content, except an assistant message that carries tool calls;
    a content array has at least one part. 400 naming `messages[i].content`."""
    param = f"messages[{i}].content"
    if msg.content is None and not (msg.role == "assistant" and msg.tool_calls):
        needs = " (or tool_calls)" if msg.role == "assistant" else ""
        raise bad_request(f"Missing required parameter: '{param}': a {msg.role} message needs content{needs}.",
                          param=param, code="missing_required_parameter")
    if isinstance(msg.content, list) and not msg.content:
        raise bad_request(f"Invalid '{param}': empty array; send at least one content part.",
                          param=param, code="invalid_value")


class TokenizerView:
    """Wraps a Hugging Face tokenizer; `chat_template` (text) overrides the model's own template."""

    def __init__(self, tokenizer: Any, chat_template: str | None = None) -> None:
        self.tok = tokenizer
        if chat_template is not None:
            tokenizer.chat_template = chat_template
        self._str_cache: dict[int, str] = {}
        self._bytes_cache: dict[int, list[int]] = {}

    @cached_property
    def max_token_chars(self) -> int:
        """The longest vocabulary piece in characters. A piece never stands for more characters of
        text than it has (byte-level BPE: one character per byte; sentencepiece: one per character),
        so a text of c characters is at least ceil(c / max_token_chars) tokens."""
        pieces = self.tok.convert_ids_to_tokens(list(range(len(self.tok))))
        return max([len(p) for p in pieces if isinstance(p, str)] or [1])

    def check_length(self, chars: int, max_model_len: int, param: str) -> None:
        """400 before tokenizing when `chars` characters cannot fit the context whatever they say."""
        if chars <= max_model_len:  # cheap path: every token is at least one character
            return
        least = -(-chars // self.max_token_chars)
        if least > max_model_len:
            raise prompt_too_long(max_model_len, least, chars, param)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return str(self.tok.decode(ids, skip_special_tokens=skip_special_tokens))

    @property
    def chat_template(self) -> str | None:
        template = getattr(self.tok, "chat_template", None)
        return template if isinstance(template, str) else None

    def chat_prompt(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> list[int]:
        """Token ids the model sees for `messages`; 400 if the model has no usable chat template."""
        return self.render_chat(messages, add_generation_prompt)[1]

    def render_chat(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, *,
                    tools: list[dict[str, Any]] | None = None,
                    template_kwargs: dict[str, Any] | None = None) -> tuple[str, list[int]]:
        """(prompt text, token ids) for a conversation; 400 if the template cannot render it."""
        try:
            text = render_chat_template(self.tok, messages, add_generation_prompt, tools=tools,
                                        **(template_kwargs or {}))
            return text, self.encode(text, add_special_tokens=False)
        except (ValueError, TypeError, KeyError, AwqServeError) as e:
            raise bad_request(f"Could not apply the chat template to these messages: {e}",
                              param="messages", code="chat_template_error") from None
        except Exception as e:  # jinja2 TemplateError (raise_exception in templates) and friends
            if type(e).__module__.startswith("jinja2"):
                raise bad_request(f"The chat template rejected these messages: {e}",
                                  param="messages", code="chat_template_error") from None
            raise

    def token_str(self, token_id: int) -> str:
        s = self._str_cache.get(token_id)
        if s is None:
            s = self._str_cache[token_id] = self.decode([token_id])
        return s

    def token_bytes(self, token_id: int) -> list[int]:
        """UTF-8 bytes of one token; exact for byte-level BPE and sentencepiece byte-fallback pieces."""
        b = self._bytes_cache.get(token_id)
        if b is None:
            b = self._bytes_cache[token_id] = self._compute_bytes(token_id)
        return b

    def _compute_bytes(self, token_id: int) -> list[int]:
        text = self.token_str(token_id)
        if "\ufffd" not in text:
            return list(text.encode("utf-8"))
        piece = self.tok.convert_ids_to_tokens(token_id)
        if isinstance(piece, str):
            m = _BYTE_PIECE.match(piece)
            if m:
                return [int(m.group(1), 16)]
            table = _unicode_to_byte()
            if piece and all(ch in table for ch in piece):
                return [table[ch] for ch in piece]
        return list(text.encode("utf-8"))
