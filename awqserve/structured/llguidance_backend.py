"""The grammar backend on llguidance (guidance-ai's Rust constrained-decoding library).

Why llguidance: docs/benchmarks/grammar-backends-2026-12-02.md (cold compiles 2-30x faster than
xgrammar's, a 7.6 MB wheel with no dependencies, Lark + inline JSON schemas + special tokens + lazy
lexemes for tool-call triggers). How each kind becomes a grammar: `llguidance_grammars`.

Compiling builds and validates an `LLMatcher` once (the grammar's parser and lexer); every request
gets a `deep_copy` of that prototype (about 10 µs). The prototype is never advanced, so copies may be
taken from any thread.

llguidance matchers enter a permanent error state on a rejected token; `accept_token` checks the
token first (`validate_tokens`) so a rejected token leaves the matcher usable, as the interface
promises.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import llguidance
import llguidance.hf
import llguidance.torch
import torch

from awqserve.structured.backend import CompiledGrammar, GrammarBackend, GrammarMatcher, bitmask_words
from awqserve.structured.llguidance_grammars import (ANSWER_OR_CALLS, CALL_CLOSE, CALL_OPEN, THINK_CLOSE, THINK_OPEN,
                                                     TokenizerTraits, compose, grammar_source, json_options,
                                                     reasoning_lark)
from awqserve.structured.spec import GrammarError, GrammarKind, GrammarSpec, ReasoningPrefix, ToolCallMode

DEFAULT_MAX_WHITESPACE = 16


class LLGuidanceMatcher(GrammarMatcher):
    """A per-request `llguidance.LLMatcher`; see `GrammarMatcher` for the contract.

    EOS is kept here, not fed to llguidance: a stopped LLMatcher takes EOS as a no-op that a later
    rollback does not count, which would break `rollback(n)` over the engine's own token count.
    """

    def __init__(self, matcher: llguidance.LLMatcher, eos_token_ids: frozenset[int],
                 eos_row: torch.Tensor) -> None:
        self._m = matcher
        self._eos = eos_token_ids
        self._eos_row = eos_row
        self._ended = False  # an EOS was accepted: the output is final

    @property
    def raw(self) -> llguidance.LLMatcher:
        """The library matcher (for the backend's parallel fill)."""
        return self._m

    @property
    def ended(self) -> bool:
        return self._ended

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        if self._ended:
            bitmask[row].copy_(self._eos_row)
        else:
            llguidance.torch.fill_next_token_bitmask(self._m, bitmask, row)

    def accept_token(self, token_id: int) -> bool:
        if token_id in self._eos:
            if self._ended or not self._m.is_accepting():
                return self._ended  # EOS after EOS: still nothing new
            self._ended = True
            return True
        if self._ended or self._m.validate_tokens([token_id]) != 1:
            return False
        return self._m.consume_token(token_id)

    def is_accepting(self) -> bool:
        return self._ended or self._m.is_accepting()

    def is_terminated(self) -> bool:
        return self._ended or (self._m.is_stopped() and not self._m.is_error())

    def rollback(self, num_tokens: int) -> None:
        if num_tokens and self._ended:
            self._ended, num_tokens = False, num_tokens - 1
        if num_tokens and not self._m.rollback(num_tokens):
            raise ValueError(f"cannot roll back {num_tokens} tokens: {self._m.get_error() or 'too many'}")

    def reset(self) -> None:
        self._ended = False
        self._m.reset()


def eos_only_row(vocab_size: int, eos: Sequence[int]) -> torch.Tensor:
    """One bitmask row (int32 [ceil(V / 32)]) that allows exactly the `eos` ids."""
    bits = torch.zeros(bitmask_words(vocab_size) * 32, dtype=torch.bool)
    bits[list(eos)] = True
    weights = torch.tensor([1 << k for k in range(32)], dtype=torch.int64)
    words = (bits.view(-1, 32).to(torch.int64) * weights).sum(1)
    return torch.where(words >= 1 << 31, words - (1 << 32), words).to(torch.int32)


class LLGuidanceCompiled(CompiledGrammar):
    """A validated prototype matcher; `matcher()` hands out copies of it."""

    def __init__(self, spec: GrammarSpec, prototype: llguidance.LLMatcher, eos: frozenset[int],
                 eos_row: torch.Tensor) -> None:
        self.spec = spec
        self._prototype = prototype
        self._eos = eos
        self._eos_row = eos_row

    def matcher(self) -> LLGuidanceMatcher:
        return LLGuidanceMatcher(self._prototype.deep_copy(), self._eos, self._eos_row)


class LLGuidanceBackend(GrammarBackend):
    """Compiles specs for one HF fast tokenizer and one logits vocabulary size.

    `vocab_size` is the model's logits width (config `vocab_size`, e.g. 151,936 for Qwen3), which
    may exceed the tokenizer's length; ids past the tokenizer are never allowed. `eos_token_ids`:
    every id that ends generation (EOS, end of turn); masks allow them exactly when the output is a
    complete match. `max_whitespace`: the JSON whitespace bound (None: unbounded).
    Building one takes 0.5-2 s (the token trie): build one per tokenizer and keep it.
    """

    def __init__(self, tokenizer: Any, vocab_size: int, eos_token_ids: Sequence[int], *,
                 max_whitespace: int | None = DEFAULT_MAX_WHITESPACE, num_threads: int = 2) -> None:
        if vocab_size < len(tokenizer):
            raise ValueError(f"vocab_size {vocab_size} is smaller than the tokenizer ({len(tokenizer)} tokens)")
        eos = [int(t) for t in eos_token_ids]
        if not eos:
            raise ValueError("a grammar backend needs at least one EOS token id")
        self.vocab_size = vocab_size
        self.eos_token_ids = tuple(eos)
        self.max_whitespace = max_whitespace
        self._eos = frozenset(eos)
        self._eos_row = eos_only_row(vocab_size, eos)
        self._tok = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=eos)
        self._traits = _tokenizer_traits(self._tok, tokenizer)
        self._executor = llguidance.LLExecutor(num_threads=num_threads)

    @property
    def traits(self) -> TokenizerTraits:
        return self._traits

    def compile(self, spec: GrammarSpec) -> LLGuidanceCompiled:
        grammar = self._grammar(spec)
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, self._tok)
        if is_error:
            raise GrammarError(_message(spec, messages[0]))
        prototype = llguidance.LLMatcher(self._tok, grammar, log_level=0)
        if prototype.is_error():
            raise GrammarError(_message(spec, prototype.get_error()))
        return LLGuidanceCompiled(spec, prototype, self._eos, self._eos_row)

    def fill_bitmasks(self, matchers: Sequence[GrammarMatcher], bitmask: torch.Tensor,
                      rows: Sequence[int] | None = None) -> None:
        """Fill the batch's rows on llguidance's thread pool (the GIL is released meanwhile)."""
        live: list[tuple[llguidance.LLMatcher, int]] = []
        for i, m in enumerate(matchers):
            row = i if rows is None else rows[i]
            if _checked(m).ended:  # past EOS: llguidance would not know; write the EOS-only row
                bitmask[row].copy_(self._eos_row)
            else:
                live.append((_checked(m).raw, row))
        if live:
            llguidance.torch.fill_next_token_bitmask_par(self._executor, live, bitmask)

    def _grammar(self, spec: GrammarSpec) -> str:
        """The llguidance grammar (JSON text) of a spec: its own grammar, composed with an answer
        format (AUTO tools) and a reasoning prefix when the spec has them."""
        if spec.answer is not None:
            calls = replace(spec, tool_mode=ToolCallMode.REQUIRED, answer=None, reasoning=ReasoningPrefix.NONE)
            body = compose(ANSWER_OR_CALLS, {"calls": self._plain(calls), "answer": self._plain(spec.answer)})
        else:
            body = self._plain(replace(spec, reasoning=ReasoningPrefix.NONE))
        if spec.reasoning is ReasoningPrefix.NONE:
            return body
        return compose(reasoning_lark(spec.reasoning, self._traits), {"inner": body})

    def _plain(self, spec: GrammarSpec) -> str:
        fmt, source = grammar_source(spec, self._traits, self.max_whitespace)
        try:
            if fmt == "json_schema":
                return llguidance.LLMatcher.grammar_from_json_schema(
                    source, defaults=json_options(self.max_whitespace))  # type: ignore[arg-type]
            return llguidance.grammar_from(fmt, source)  # type: ignore[arg-type]
        except ValueError as e:  # not JSON / a GBNF text that does not convert
            raise GrammarError(_message(spec, str(e))) from None


def _checked(m: GrammarMatcher) -> LLGuidanceMatcher:
    if not isinstance(m, LLGuidanceMatcher):
        raise TypeError(f"expected matchers from this backend, got {type(m).__name__}")
    return m


_WHAT = {GrammarKind.JSON_SCHEMA: "JSON schema", GrammarKind.JSON_OBJECT: "JSON object grammar",
         GrammarKind.REGEX: "regex", GrammarKind.CHOICE: "choice list", GrammarKind.GRAMMAR: "grammar",
         GrammarKind.TOOL_CALLS: "tool definitions"}


def _message(spec: GrammarSpec, detail: str) -> str:
    """'invalid regex: <llguidance's message>' — its messages quote the offending text and position."""
    return f"invalid {_WHAT[spec.kind]}: {detail.strip()}"


def _single_token(tok: llguidance.LLTokenizer, text: str) -> int | None:
    ids = tok.tokenize_str(text, parse_special=True)
    return ids[0] if len(ids) == 1 and tok.is_special_token(ids[0]) else None


def _tokenizer_traits(tok: llguidance.LLTokenizer, hf_tokenizer: Any) -> TokenizerTraits:
    """Which call markers are tokens, and which added tokens free text may contain (see the class)."""
    open_id, close_id = _single_token(tok, CALL_OPEN), _single_token(tok, CALL_CLOSE)
    decoder = getattr(hf_tokenizer, "added_tokens_decoder", {})
    text_ids = tuple(sorted(i for i, t in decoder.items()
                            if not t.special and i not in (open_id, close_id) and tok.is_special_token(i)))
    think = (_single_token(tok, THINK_OPEN), _single_token(tok, THINK_CLOSE))
    return TokenizerTraits(open_is_token=open_id is not None, close_is_token=close_id is not None,
                           text_token_ids=text_ids,
                           think_ids=(think[0], think[1]) if think[0] is not None and think[1] is not None else None)
