"""Structured outputs: grammar specs, the grammar backend interface, compilation and token masks.

    spec.py                 GrammarSpec (what to constrain to) with a stable cache key; GrammarError
    backend.py              GrammarBackend / CompiledGrammar / GrammarMatcher; allocate/apply_bitmask
    compiler.py             GrammarCompiler: off-thread compiles, LRU cache by spec.key
    llguidance_backend.py   the implementation on llguidance
    llguidance_grammars.py  spec → llguidance grammar text (JSON schema, regex, Lark, hermes tool calls)

Importing this package does not import llguidance; `build_backend` does.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from awqserve.structured.backend import (CompiledGrammar, GrammarBackend, GrammarMatcher, allocate_bitmask,
                                         apply_bitmask, bitmask_words)
from awqserve.structured.compiler import CompilerStats, GrammarCompiler
from awqserve.structured.spec import GrammarError, GrammarKind, GrammarSpec, ReasoningPrefix, ToolCallMode, ToolSpec

if TYPE_CHECKING:
    from awqserve.structured.llguidance_backend import LLGuidanceBackend

__all__ = [
    "CompiledGrammar", "CompilerStats", "GrammarBackend", "GrammarCompiler", "GrammarError", "GrammarKind",
    "GrammarMatcher", "GrammarSpec", "LLGuidanceBackend", "ReasoningPrefix", "ToolCallMode", "ToolSpec", "allocate_bitmask",
    "apply_bitmask", "bitmask_words", "build_backend",
]


def build_backend(tokenizer: Any, vocab_size: int, eos_token_ids: Sequence[int], **options: Any) -> GrammarBackend:
    """The grammar backend for an HF fast tokenizer (`PreTrainedTokenizerFast`) and a model.

    `vocab_size`: the model's logits width (config.json `vocab_size`); `eos_token_ids`: every id that
    ends generation. `options` go to `LLGuidanceBackend` (`max_whitespace`, `num_threads`).
    Takes 0.5-2 s: build one per loaded model.
    """
    from awqserve.structured.llguidance_backend import LLGuidanceBackend

    return LLGuidanceBackend(tokenizer, vocab_size, eos_token_ids, **options)


def __getattr__(name: str) -> Any:  # lazy, so that importing the package does not load llguidance
    if name == "LLGuidanceBackend":
        from awqserve.structured.llguidance_backend import LLGuidanceBackend

        return LLGuidanceBackend
    raise AttributeError(name)
