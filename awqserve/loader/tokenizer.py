"""Tokenizer and chat template from a model directory (transformers' AutoTokenizer, offline)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from awqserve.errors import ModelLoadError


def _read_template(chat_template: str) -> str:
    """A template given inline, or the path of a file holding one (like vLLM's --chat-template)."""
    path = Path(chat_template).expanduser()
    if "{" not in chat_template and path.is_file():
        return path.read_text()
    if "{" not in chat_template:
        raise ModelLoadError(f"chat template file {chat_template} does not exist")
    return chat_template


def load_tokenizer(model_dir: str | Path, *, chat_template: str | None = None) -> Any:
    """Load the tokenizer in `model_dir`; `chat_template` (inline Jinja or a file path) overrides its template."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    except Exception as e:  # transformers raises several types; the message is what matters
        raise ModelLoadError(f"cannot load the tokenizer from {model_dir}: {e}") from e
    if chat_template is not None:
        tok.chat_template = _read_template(chat_template)
    return tok


def render_chat_template(tokenizer: Any, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                         *, chat_template: str | None = None, tools: list[dict[str, Any]] | None = None,
                         **template_kwargs: Any) -> str:
    """The prompt text of `messages` (and `tools`, for templates that render them) under the tokenizer's
    (or the given) chat template; extra keyword arguments reach the template (e.g. enable_thinking)."""
    template = _read_template(chat_template) if chat_template is not None else None
    if template is None and not getattr(tokenizer, "chat_template", None):
        raise ModelLoadError("the model has no chat template; pass one with --chat-template")
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                         chat_template=template, tools=tools, **template_kwargs)
    return str(text)


def apply_chat_template(tokenizer: Any, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                        *, chat_template: str | None = None, **template_kwargs: Any) -> list[int]:
    """Render `messages` with the chat template (`render_chat_template`) and tokenize the result.

    Rendering to text first and encoding without extra special tokens keeps the BOS handling in
    the template's hands (templates that start with BOS would otherwise get it twice).
    """
    text = render_chat_template(tokenizer, messages, add_generation_prompt, chat_template=chat_template,
                                **template_kwargs)
    return list(tokenizer.encode(text, add_special_tokens=False))
