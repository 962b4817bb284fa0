"""Incremental detokenization and stop conditions.

Text is produced with two offsets into a token window (the method popularised by TGI/vLLM): decode
`tokens[prefix:read]` and `tokens[prefix:]`; the new text is the difference, accepted only when it
does not end in U+FFFD (an incomplete multi-byte UTF-8 character, held back until the next token
completes it). A few prompt tokens seed the window so tokenizers that treat a sequence's first token
specially (leading spaces) decode the first output token as they would mid-text.

Stop strings are searched in the not-yet-emitted tail (so matches spanning tokens are found); text
that could still become a stop string is held back, and a matched stop string is never emitted
(unless `include_stop_str_in_output`). Stops decided by token ids (EOS, stop ids, length) are the
scheduler's (`scheduler.check_stop`); this module owns text and stop strings only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

from awqserve.engine.sampling_params import SamplingParams

_PROMPT_CONTEXT = 5  # prompt tokens used to seed the decode window


@dataclass
class DetokState:
    """Per-sample incremental state. `text` may run ahead of what was emitted (`emitted` chars)."""

    tokens: list[int] = field(default_factory=list)
    prefix_offset: int = 0
    read_offset: int = 0
    text: str = ""
    emitted: int = 0
    hold: int = 0  # chars at the end of `text` held back as a possible stop-string prefix


class TokenDecoder(Protocol):
    """What the detokenizer needs of a tokenizer (Hugging Face tokenizers satisfy it)."""

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = ..., *,
               clean_up_tokenization_spaces: bool = ...) -> str: ...


class Detokenizer:
    """Turns sampled tokens into text deltas and finds stop strings in them."""

    def __init__(self, tokenizer: TokenDecoder) -> None:
        self.tokenizer = tokenizer

    def new_state(self, prompt_token_ids: list[int]) -> DetokState:
        ctx = list(prompt_token_ids[-_PROMPT_CONTEXT:])
        return DetokState(tokens=ctx, prefix_offset=0, read_offset=len(ctx))

    # -- decoding --------------------------------------------------------------------------------
    def _decode(self, ids: list[int], skip_special: bool) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=skip_special,
                                         clean_up_tokenization_spaces=False))

    def append_token(self, st: DetokState, token_id: int, skip_special: bool) -> str:
        """Add one token; returns the newly decoded text ('' while a character is incomplete)."""
        st.tokens.append(token_id)
        prefix = self._decode(st.tokens[st.prefix_offset:st.read_offset], skip_special)
        full = self._decode(st.tokens[st.prefix_offset:], skip_special)
        if len(full) <= len(prefix) or full.endswith("\ufffd"):
            return ""
        new = full[len(prefix):]
        st.prefix_offset, st.read_offset = st.read_offset, len(st.tokens)
        st.text += new
        return new

    # -- stop conditions -------------------------------------------------------------------------
    @staticmethod
    def _check_stop_strings(st: DetokState, stops: list[str], include: bool, new_len: int) -> str | None:
        """Truncate at the earliest stop string in the text not yet emitted; return it if found."""
        longest = max(len(s) for s in stops)
        start = max(st.emitted, len(st.text) - new_len - longest + 1)
        best: tuple[int, str] | None = None
        for s in stops:
            i = st.text.find(s, start)
            if i != -1 and (best is None or i < best[0]):
                best = (i, s)
        if best is None:
            st.hold = max((_partial_suffix(st.text, s, st.emitted) for s in stops), default=0)
            return None
        i, s = best
        st.text = st.text[: i + len(s) if include else i]
        st.hold = 0
        return s

    def process_token(self, st: DetokState, token_id: int, params: SamplingParams, num_output_tokens: int) -> str | None:
        """Decode one sampled token into `st`; return the stop string it completed, if any (the text is
        then truncated at it). Stop strings count only once `min_tokens` tokens are out."""
        new = self.append_token(st, token_id, params.skip_special_tokens)
        if params.stop and num_output_tokens > params.min_tokens and new:
            return self._check_stop_strings(st, params.stop, params.include_stop_str_in_output, len(new))
        return None

    @staticmethod
    def take_delta(st: DetokState, finished: bool) -> str:
        """The text to emit now: everything decoded except held-back stop prefixes (flushed at the end)."""
        end = len(st.text) if finished else len(st.text) - st.hold
        if end <= st.emitted:
            return ""
        delta = st.text[st.emitted:end]
        st.emitted = end
        return delta


def _partial_suffix(text: str, stop: str, floor: int) -> int:
    """Length of the longest suffix of text[floor:] that is a proper prefix of `stop`."""
    for k in range(min(len(stop) - 1, len(text) - floor), 0, -1):
        if text.endswith(stop[:k]):
            return k
    return 0
