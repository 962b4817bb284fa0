"""Engine `TokenLogprob` records → OpenAI's two logprob shapes (chat `content` list, legacy completions).

Non-finite logprobs become -9999.0 (OpenAI's "very unlikely" value) so every body is valid JSON.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from awqserve.engine.outputs import TokenLogprob
from awqserve.entrypoints.openai.tokenization import TokenizerView


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) else -9999.0


def _top(entry: TokenLogprob, k: int) -> list[tuple[int, float]]:
    return sorted(entry.top.items(), key=lambda kv: -kv[1])[:k]


def chat_logprobs(tok: TokenizerView, entries: list[TokenLogprob], k: int) -> dict[str, Any]:
    """`{"content": [...], "refusal": None}` for the chat API (one item per generated token)."""
    content = []
    for e in entries:
        content.append({
            "token": tok.token_str(e.token_id), "logprob": _finite(e.logprob), "bytes": tok.token_bytes(e.token_id),
            "top_logprobs": [{"token": tok.token_str(t), "logprob": _finite(lp), "bytes": tok.token_bytes(t)}
                             for t, lp in _top(e, k)],
        })
    return {"content": content, "refusal": None}


@dataclass
class LegacyLogprobs:
    """Accumulates the legacy completions shape; `text_offset` counts characters of the returned text."""

    k: int
    tokens: list[str] = field(default_factory=list)
    token_logprobs: list[float | None] = field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = field(default_factory=list)
    text_offset: list[int] = field(default_factory=list)
    offset: int = 0

    def add(self, tok: TokenizerView, entries: list[TokenLogprob | None], token_ids: list[int]) -> None:
        """Append positions; `entries[i]` None means "no logprob here" (the first prompt token under echo)."""
        for tid, e in zip(token_ids, entries):
            text = tok.token_str(tid)
            self.tokens.append(text)
            self.text_offset.append(self.offset)
            self.offset += len(text)
            if e is None:
                self.token_logprobs.append(None)
                self.top_logprobs.append(None)
                continue
            self.token_logprobs.append(_finite(e.logprob))
            top = {tok.token_str(t): _finite(lp) for t, lp in _top(e, self.k)}
            top.setdefault(text, _finite(e.logprob))  # the sampled token is always listed
            self.top_logprobs.append(top)

    def as_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "token_logprobs": self.token_logprobs,
                "top_logprobs": self.top_logprobs, "text_offset": self.text_offset}

    def delta_since(self, start: int) -> dict[str, Any]:
        return {"tokens": self.tokens[start:], "token_logprobs": self.token_logprobs[start:],
                "top_logprobs": self.top_logprobs[start:], "text_offset": self.text_offset[start:]}
