"""The grammar backend interface, and the batched bitmask ops the sampler applies to logits.

A `GrammarBackend` is built once per tokenizer. It compiles a `GrammarSpec` into a
`CompiledGrammar` (immutable, shared by every request with the same spec), which hands out one
`GrammarMatcher` per request. Each decode step the engine asks each constrained request's matcher to
fill its row of a token bitmask, the sampler calls `apply_bitmask` on the logits, and the sampled
token goes back through `accept_token`.

Bitmask layout (shared with xgrammar and llguidance): int32 tensor [rows, ceil(V / 32)]; token `t`
is allowed in row `r` iff bit `t % 32` of word `t // 32` is set. `V` is the model's logits
vocabulary, which may be larger than the tokenizer's: ids past the tokenizer are never allowed.

EOS: the backend is given the model's EOS/stop token ids. A mask allows them exactly when the output
so far is a complete match (`is_accepting()`), never before; once `is_terminated()` they are the
only tokens allowed.
"""
from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from typing import Sequence

import torch

from awqserve.structured.spec import GrammarError, GrammarSpec

__all__ = ["GrammarBackend", "CompiledGrammar", "GrammarMatcher", "GrammarError",
           "allocate_bitmask", "apply_bitmask", "bitmask_words"]


class GrammarMatcher(ABC):
    """One request's position in a grammar. Not thread-safe: one owner (the engine thread).

    Invariant: after any sequence of accepted tokens, `fill_bitmask` allows exactly the tokens whose
    acceptance keeps the output a prefix of some complete match (plus EOS when it already is one).
    """

    @abstractmethod
    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        """Write the allowed next tokens into `bitmask[row]` (CPU, int32, contiguous)."""

    @abstractmethod
    def accept_token(self, token_id: int) -> bool:
        """Advance by one sampled token. Returns False, leaving the state unchanged, if the token is
        not allowed here. Accepting EOS when `is_accepting()` terminates the matcher."""

    @abstractmethod
    def is_accepting(self) -> bool:
        """The output so far is a complete match: EOS is allowed (more tokens may be too)."""

    @abstractmethod
    def is_terminated(self) -> bool:
        """The grammar is complete and cannot be extended: only EOS (or nothing) may follow."""

    @abstractmethod
    def rollback(self, num_tokens: int) -> None:
        """Undo the last `num_tokens` accepted tokens (e.g. rejected speculative tokens)."""

    @abstractmethod
    def reset(self) -> None:
        """Return to the start state, as if no token had been accepted."""


class CompiledGrammar(ABC):
    """A compiled spec. Immutable and thread-safe: any thread may call `matcher()` at any time."""

    spec: GrammarSpec

    @abstractmethod
    def matcher(self) -> GrammarMatcher:
        """A fresh matcher at the start state (cheap: microseconds)."""


class GrammarBackend(ABC):
    """Compiles specs for one tokenizer and one logits vocabulary size.

    Invariants: `compile` is thread-safe and may be slow (call it off the engine thread, see
    `GrammarCompiler`); it raises `GrammarError` with a message naming the problem for a spec that
    cannot compile, and nothing else for bad user input.
    """

    vocab_size: int
    eos_token_ids: tuple[int, ...]

    @abstractmethod
    def compile(self, spec: GrammarSpec) -> CompiledGrammar:
        """Compile `spec` (no caching here: `GrammarCompiler` caches by `spec.key`)."""

    def fill_bitmasks(self, matchers: Sequence[GrammarMatcher], bitmask: torch.Tensor,
                      rows: Sequence[int] | None = None) -> None:
        """Fill `bitmask[rows[i]]` from `matchers[i]` for a whole batch (default `rows`: 0..n-1).

        Backends override this to fill rows in parallel; the result equals filling them one by one.
        """
        for i, m in enumerate(matchers):
            m.fill_bitmask(bitmask, i if rows is None else rows[i])


def bitmask_words(vocab_size: int) -> int:
    """int32 words per bitmask row for a vocabulary of `vocab_size` tokens."""
    return (vocab_size + 31) // 32


def allocate_bitmask(batch: int, vocab_size: int) -> torch.Tensor:
    """A CPU int32 bitmask [batch, ceil(vocab_size / 32)] with every token allowed (all bits set).

    Rows left untouched therefore leave their logits row unconstrained under `apply_bitmask`.
    """
    return torch.full((batch, bitmask_words(vocab_size)), -1, dtype=torch.int32)


_BYTE_BIAS: dict[torch.device, torch.Tensor] = {}


def _byte_bias(device: torch.device) -> torch.Tensor:
    """[256, 8] float32: row b holds 0.0 for set bits of byte b (low bit first) and -inf for clear ones.

    Gathering one row per mask byte turns a packed mask into an additive bias without branches:
    masked_fill on CPU is a per-element branch and runs 20x slower on mixed masks.
    """
    table = _BYTE_BIAS.get(device)
    if table is None:
        bits = (torch.arange(256).unsqueeze(-1) >> torch.arange(8)) & 1
        table = torch.where(bits.bool(), 0.0, float("-inf")).to(torch.float32).to(device)
        _BYTE_BIAS[device] = table
    return table


def apply_bitmask(logits: torch.Tensor, bitmask: torch.Tensor, rows: Sequence[int] | None = None) -> None:
    """Set disallowed logits to -inf, in place, for all rows or only `rows`.

    `logits` is float32 [B, V] on any device; `bitmask` is int32 [B, W] with rows aligned to logits
    rows (row r of the mask constrains row r of the logits); `rows` selects the rows to constrain
    (None: all). Columns past 32 * W (a logits vocab wider than the mask) are disallowed.
    """
    if logits.dim() != 2 or bitmask.dim() != 2 or bitmask.dtype != torch.int32:
        raise ValueError(f"expected logits [B, V] and an int32 bitmask [B, W], got {tuple(logits.shape)} "
                         f"and {tuple(bitmask.shape)} {bitmask.dtype}")
    if sys.byteorder != "little":  # the byte view below reads the words' low bits first
        raise RuntimeError("apply_bitmask assumes a little-endian host")
    vocab = logits.shape[1]
    index = None if rows is None else torch.as_tensor(list(rows), dtype=torch.long, device=logits.device)
    mask = bitmask.to(logits.device, non_blocking=True)
    mask = mask if index is None else mask.index_select(0, index)
    n = mask.shape[0]
    if n == 0:
        return
    as_bytes = mask.contiguous().view(torch.uint8).reshape(-1).to(torch.long)
    bias = _byte_bias(logits.device).index_select(0, as_bytes).view(n, -1)
    width = min(vocab, bias.shape[1])
    if index is None:
        logits[:, :width].add_(bias[:, :width])
        logits[:, width:] = float("-inf")
    else:
        sub = logits.index_select(0, index)
        sub[:, :width].add_(bias[:, :width])
        sub[:, width:] = float("-inf")
        logits.index_copy_(0, index, sub)
