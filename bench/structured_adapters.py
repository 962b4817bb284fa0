"""The three things bench/structured_backends.py measures, behind one small adapter interface each:
xgrammar, llguidance (the libraries themselves) and awqserve.structured (our wrapper over the kept one).

Each adapter: `build(tokenizer, vocab_size, eos) -> info`, `compile(info, workload) -> compiled`,
`matcher(compiled)`, `fill(matcher, bitmask, row)`, `accept(matcher, token)`, `bitmask(rows, vocab)`.
Heavy imports happen inside, so a library missing from this venv only drops its rows.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

from structured_workloads import Workload


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


class XGrammarAdapter:
    """xgrammar: TokenizerInfo + GrammarCompiler (its own compile cache) + GrammarMatcher."""

    name = "xgrammar"

    def __init__(self, tokenizer: Any, vocab_size: int, eos: list[int]) -> None:
        import xgrammar as xgr
        self.xgr = xgr
        self.build_s, self.info = _timed(lambda: xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=eos))
        self.compiler = xgr.GrammarCompiler(self.info, max_threads=2)
        self.batcher = xgr.BatchGrammarMatcher(max_threads=2)
        self.vocab_size = vocab_size

    def clear_cache(self) -> None:
        self.compiler.clear_cache()

    def compile(self, w: Workload) -> Any:
        c = self.compiler
        if w.kind in ("json_schema", "json_object"):
            # strict_mode=False honours the schema as written (JSON Schema semantics), as llguidance does
            return c.compile_json_schema(json.dumps(w.payload), strict_mode=False)
        if w.kind == "regex":
            return c.compile_regex(w.payload)
        if w.kind == "choice":
            return c.compile_grammar("root ::= " + " | ".join(json.dumps(x) for x in w.payload))
        return c.compile_structural_tag(json.dumps(w.xgrammar_tag()))

    def matcher(self, compiled: Any) -> Any:
        return self.xgr.GrammarMatcher(compiled)

    def bitmask(self, rows: int) -> Any:
        return self.xgr.allocate_token_bitmask(rows, self.vocab_size)

    def fill(self, m: Any, bitmask: Any, row: int) -> None:
        m.fill_next_token_bitmask(bitmask, row)

    def fill_batch(self, ms: list[Any], bitmask: Any) -> None:
        self.batcher.batch_fill_next_token_bitmask(ms, bitmask)

    def accept(self, m: Any, token: int) -> bool:
        return m.accept_token(token)

    def reset(self, m: Any) -> None:
        m.reset()


class LLGuidanceAdapter:
    """llguidance: LLTokenizer + grammar text + LLMatcher; no library cache, so the "cached" compile
    is a validated grammar string kept by the caller and a matcher copied from a kept prototype."""

    name = "llguidance"

    def __init__(self, tokenizer: Any, vocab_size: int, eos: list[int]) -> None:
        import llguidance
        import llguidance.hf
        import llguidance.torch
        self.llg, self.lt = llguidance, llguidance.torch
        self.build_s, self.tok = _timed(lambda: llguidance.hf.from_tokenizer(
            tokenizer, n_vocab=vocab_size, eos_token=eos))
        self.executor = llguidance.LLExecutor(num_threads=2)
        self.vocab_size = vocab_size
        self.cache: dict[str, Any] = {}

    def clear_cache(self) -> None:
        self.cache.clear()

    def _grammar(self, w: Workload) -> str:
        M = self.llg.LLMatcher
        if w.kind in ("json_schema", "json_object"):
            return M.grammar_from_json_schema(w.payload)
        if w.kind == "regex":
            return M.grammar_from_regex(w.payload)
        if w.kind == "choice":
            return M.grammar_from_lark("start: " + " | ".join(json.dumps(x) for x in w.payload))
        special = len(self.tok.tokenize_str("<tool_call>", parse_special=True)) == 1
        return M.grammar_from_lark(w.lark(special))

    def compile(self, w: Workload) -> Any:
        key = w.name
        if key not in self.cache:
            grammar = self._grammar(w)
            proto = self.llg.LLMatcher(self.tok, grammar)
            if proto.is_error():
                raise ValueError(proto.get_error())
            self.cache[key] = proto
        return self.cache[key]

    def matcher(self, compiled: Any) -> Any:
        return compiled.deep_copy()

    def bitmask(self, rows: int) -> Any:
        return self.lt.allocate_token_bitmask(rows, self.vocab_size)

    def fill(self, m: Any, bitmask: Any, row: int) -> None:
        self.lt.fill_next_token_bitmask(m, bitmask, row)

    def fill_batch(self, ms: list[Any], bitmask: Any) -> None:
        self.lt.fill_next_token_bitmask_par(self.executor, [(m, i) for i, m in enumerate(ms)], bitmask)

    def accept(self, m: Any, token: int) -> bool:
        return m.consume_token(token)

    def reset(self, m: Any) -> None:
        m.reset()


class AwqserveAdapter:
    """awqserve.structured: our interface over the kept library, with its own LRU compile cache."""

    name = "awqserve"

    def __init__(self, tokenizer: Any, vocab_size: int, eos: list[int]) -> None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from awqserve import structured as st
        self.st = st
        self.build_s, self.backend = _timed(lambda: st.build_backend(tokenizer, vocab_size, eos))
        self.compiler = st.GrammarCompiler(self.backend, max_workers=1)
        self.vocab_size = vocab_size

    def clear_cache(self) -> None:
        self.compiler.clear()

    def compile(self, w: Workload) -> Any:
        return self.compiler.compile(w.spec(self.st)).result()

    def matcher(self, compiled: Any) -> Any:
        return compiled.matcher()

    def bitmask(self, rows: int) -> Any:
        return self.st.allocate_bitmask(rows, self.vocab_size)

    def fill(self, m: Any, bitmask: Any, row: int) -> None:
        m.fill_bitmask(bitmask, row)

    def fill_batch(self, ms: list[Any], bitmask: Any) -> None:
        self.backend.fill_bitmasks(ms, bitmask)

    def accept(self, m: Any, token: int) -> bool:
        return m.accept_token(token)

    def reset(self, m: Any) -> None:
        m.reset()


ADAPTERS = {"xgrammar": XGrammarAdapter, "llguidance": LLGuidanceAdapter, "awqserve": AwqserveAdapter}


# ----------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------
