"""Calibration tokens for AWQ: our own varied English text, plus chat-formatted dialogues.

File format (awqserve/data/calibration.txt): documents separated by a line holding only `===`.
A document whose first line is `[chat]` is a dialogue: its lines start with `system:`, `user:` or
`assistant:` (continuation lines belong to the previous turn) and it is rendered through the
tokenizer's chat template, so the activations seen at calibration include the template's special
tokens exactly as served requests will. Every other document is plain text.

Token samples: all documents are tokenized in file order, joined with the EOS token and cut into
`num_samples` windows of `seq_len` tokens, spread evenly over the stream (overlapping only when
the text is shorter than `num_samples * seq_len`). Deterministic: no randomness at all.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

DOC_SEPARATOR = "==="
CHAT_MARKER = "[chat]"
_ROLES = ("system", "user", "assistant")


def default_calibration_text() -> str:
    """The calibration text shipped with awqserve (package data)."""
    return (Path(__file__).resolve().parents[2] / "data" / "calibration.txt").read_text(encoding="utf-8")


def read_calibration_text(path: str | Path | None) -> str:
    return default_calibration_text() if path is None else Path(path).read_text(encoding="utf-8")


def split_documents(text: str) -> list[str]:
    """Documents in file order; blank documents are dropped."""
    docs, current = [], []
    for line in text.splitlines():
        if line.strip() == DOC_SEPARATOR:
            docs.append("\n".join(current).strip())
            current = []
        else:
            current.append(line)
    docs.append("\n".join(current).strip())
    return [d for d in docs if d]


def parse_chat(doc: str) -> list[dict[str, str]]:
    """`[chat]` document -> OpenAI-style messages; raises ValueError on a line before any role."""
    messages: list[dict[str, str]] = []
    for line in doc.splitlines()[1:]:
        role, sep, rest = line.partition(":")
        if sep and role.strip().lower() in _ROLES:
            messages.append({"role": role.strip().lower(), "content": rest.strip()})
        elif messages:
            messages[-1]["content"] += "\n" + line
        elif line.strip():
            raise ValueError(f"chat calibration line before any role: {line!r}")
    return messages


def render_documents(text: str, tokenizer: Any) -> list[str]:
    """Plain documents as-is; chat documents rendered with the tokenizer's chat template (if any)."""
    out = []
    has_template = bool(getattr(tokenizer, "chat_template", None))
    for doc in split_documents(text):
        if doc.startswith(CHAT_MARKER):
            messages = parse_chat(doc)
            if has_template:
                out.append(tokenizer.apply_chat_template(messages, tokenize=False))
            else:
                out.append("\n".join(f"{m['role']}: {m['content']}" for m in messages))
        else:
            out.append(doc)
    return out


def token_stream(text: str, tokenizer: Any) -> list[int]:
    """All documents tokenized (special tokens in rendered chats are parsed) and joined by EOS."""
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    stream: list[int] = []
    for doc in render_documents(text, tokenizer):
        stream.extend(tokenizer(doc, add_special_tokens=False)["input_ids"])
        stream.append(int(eos))
    return stream


def calibration_samples(tokenizer: Any, num_samples: int, seq_len: int, text: str | None = None) -> torch.Tensor:
    """LongTensor [num_samples, seq_len] of calibration windows (see module docstring)."""
    if num_samples <= 0 or seq_len <= 0:
        raise ValueError("num_samples and seq_len must be positive")
    stream = token_stream(default_calibration_text() if text is None else text, tokenizer)
    if len(stream) < seq_len:
        raise ValueError(f"calibration text has {len(stream)} tokens, fewer than seq_len {seq_len}")
    ids = torch.tensor(stream, dtype=torch.long)
    last_start = len(stream) - seq_len
    starts = torch.linspace(0, last_start, num_samples).round().long() if num_samples > 1 else torch.zeros(1).long()
    return torch.stack([ids[s:s + seq_len] for s in starts.tolist()])
