"""Prompt prefixes for cache-affine routing: what text a request starts with, and which replica saw it.

Pure Python, no Ray: the router (`router.py`) and its unit tests use it alike.

A prompt is cut into fixed-size character chunks; chunk i is keyed by a hash chained over chunks
0..i, so a key names a whole prefix, not a piece of text that could occur anywhere. `PrefixTable`
remembers, per key, the replica that last served a prompt with that prefix (bounded, least recently
used first out). Characters stand in for tokens: the router runs before tokenization and only needs
"same leading text" to mean "same leading KV blocks", which holds for one tokenizer.
"""
from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Hashable, Iterable

# Routes whose body carries a prompt; everything else (models, health, metrics) has no prefix.
_PROMPT_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/responses")
MAX_PREFIX_CHARS = 16384  # longer prompts are keyed on their start only (the part that is shared)


def prompt_text(path: str, body: bytes) -> str | None:
    """The text a generation request starts with, as the model sees it in order, or None.

    Chat: role + content of each message (text parts of multi-part content); Completions: the
    prompt (first one of a list; token-id lists as their decimal text); Responses: `instructions`
    then `input`. Malformed bodies give None: the replica's own validation answers them.
    """
    if path not in _PROMPT_ROUTES or not body:
        return None
    try:
        req = json.loads(body)
    except ValueError:
        return None
    if not isinstance(req, dict):
        return None
    if path == "/v1/chat/completions":
        text = _messages_text(req.get("messages"))
    elif path == "/v1/completions":
        text = _completion_text(req.get("prompt"))
    else:
        text = _text(req.get("instructions")) + _input_text(req.get("input"))
    return text[:MAX_PREFIX_CHARS] or None


def _text(value: Any) -> str:
    """Text of a content value: a string, or the text fields of a list of parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(_text(p.get("text") if isinstance(p, dict) else p) for p in value)
    return ""


def _messages_text(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    parts = []
    for m in messages:
        if isinstance(m, dict):
            # the role is part of the prefix: the chat template renders it before the content
            parts.append(f"<{m.get('role', '')}>{_text(m.get('content'))}")
    return "".join(parts)


def _completion_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt:
        first = prompt[0]
        if isinstance(first, int):  # one prompt given as token ids
            return " ".join(str(t) for t in prompt)
        return _completion_text(first)
    return ""


def _input_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return _messages_text(value)
    return ""


def chunk_keys(text: str, chunk_chars: int) -> list[bytes]:
    """Chained keys of the whole chunks of `text` (a trailing partial chunk is not keyed: the next
    request with the same start may end it differently, and KV blocks are shared whole only)."""
    keys, prev = [], b""
    for start in range(0, len(text) - chunk_chars + 1, chunk_chars):
        prev = hashlib.blake2b(prev + text[start:start + chunk_chars].encode(), digest_size=12).digest()
        keys.append(prev)
    return keys


@dataclass(frozen=True)
class PrefixMatch:
    """The best owner of a prompt's prefix: `replica` (None: nobody has it) and how many of the
    prompt's `total` chunks it has seen (`matched`)."""

    replica: Hashable | None
    matched: int
    total: int


class PrefixTable:
    """Prefix key → replica that last served it, bounded to `capacity` keys (LRU).

    Invariants: a key maps to at most one replica (the latest to serve that prefix: its cache is the
    warmest); `forget(replica)` removes every key of a replica that is gone.
    """

    def __init__(self, chunk_chars: int = 64, capacity: int = 200_000) -> None:
        if chunk_chars < 1 or capacity < 1:
            raise ValueError("chunk_chars and capacity must be >= 1")
        self.chunk_chars = chunk_chars
        self.capacity = capacity
        self._owner: OrderedDict[bytes, Hashable] = OrderedDict()

    def __len__(self) -> int:
        return len(self._owner)

    def keys(self, text: str) -> list[bytes]:
        return chunk_keys(text, self.chunk_chars)

    def match(self, keys: list[bytes], candidates: Iterable[Hashable]) -> PrefixMatch:
        """The candidate owning the longest run of leading keys (the deepest prefix wins; a shallower
        owner of the same start is only second best)."""
        allowed = set(candidates)
        best: Hashable | None = None
        matched = 0
        for i, key in enumerate(keys):
            owner = self._owner.get(key)
            if owner is None:
                break  # chained keys: nothing deeper can match once one level is unknown
            if owner in allowed:
                best, matched = owner, i + 1
        return PrefixMatch(best, matched, len(keys))

    def record(self, keys: list[bytes], replica: Hashable) -> None:
        """`replica` now holds every prefix in `keys` (it has just been sent the prompt)."""
        for key in keys:
            self._owner[key] = replica
            self._owner.move_to_end(key)
        while len(self._owner) > self.capacity:
            self._owner.popitem(last=False)

    def forget(self, replica: Hashable) -> None:
        for key in [k for k, r in self._owner.items() if r == replica]:
            del self._owner[key]


@dataclass
class RoutingStats:
    """Counters of the prefix-aware router (one per router instance, i.e. per ingress process).

    `with_prefix`: requests that had a keyed prefix; `known_prefix`: of those, ones whose prefix some
    live replica had seen; `prefix_hits`: of those, ones sent to that replica; `fallbacks`: ones sent
    elsewhere because it was busy or full. Hit rate = prefix_hits / known_prefix.
    """

    routed: int = 0
    with_prefix: int = 0
    known_prefix: int = 0
    prefix_hits: int = 0
    fallbacks: int = 0

    def as_dict(self) -> dict[str, float]:
        rate = self.prefix_hits / self.known_prefix if self.known_prefix else 0.0
        return {"routed": self.routed, "with_prefix": self.with_prefix, "known_prefix": self.known_prefix,
                "prefix_hits": self.prefix_hits, "fallbacks": self.fallbacks, "prefix_hit_rate": rate}
