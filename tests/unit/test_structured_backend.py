"""awqserve.structured: specs, the llguidance backend, masks, the compile cache, hermes tool calls.

A small real BPE tokenizer (tests/unit/_structured_tokenizer.py) in two flavours: tool-call markers
as added tokens (Qwen3-like) and spelled out in text pieces (demo-model-like).
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import torch
from _structured_tokenizer import VOCAB_SIZE, allowed, encode, eos_id, make_tokenizer

from awqserve.errors import InvalidRequestError
from awqserve.structured import (GrammarCompiler, GrammarError, GrammarKind, GrammarSpec, ToolCallMode, ToolSpec,
                                 allocate_bitmask, apply_bitmask, build_backend)

SCHEMA = {"type": "object",
          "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0},
                         "tags": {"type": "array", "items": {"enum": ["math", "poetry"]}}},
          "required": ["name", "age"], "additionalProperties": False}
TOOLS = (ToolSpec("get_weather", {"type": "object", "properties": {"city": {"type": "string"}},
                                  "required": ["city"], "additionalProperties": False}),
         ToolSpec("send_email", {"type": "object", "properties": {"to": {"type": "string"}},
                                 "required": ["to"], "additionalProperties": False}))
CALL_W = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
CALL_E = '<tool_call>\n{"name": "send_email", "arguments": {"to": "bob"}}\n</tool_call>'

VALID: list[tuple[GrammarSpec, str]] = [
    (GrammarSpec.json_schema(SCHEMA), '{"name": "Ada", "age": 36, "tags": ["math"]}'),
    (GrammarSpec.json_object(), '{"city": "Paris", "max_results": [1, 2.5, null]}'),
    (GrammarSpec.regex(r"[0-9]{3}-[a-z]+"), "123-paris"),
    (GrammarSpec.choice(["positive", "negative", 'say "hi"']), "negative"),
    (GrammarSpec.grammar('start: "yes" | "no" " " NUM\nNUM: /[0-9]+/'), "no 42"),
    (GrammarSpec.grammar('root ::= "maybe" [0-9]'), "maybe7"),  # GBNF, converted
    (GrammarSpec.tool_calls(TOOLS, "required"), CALL_W + "\n" + CALL_E),
    (GrammarSpec.tool_calls(TOOLS, "named", name="send_email"), CALL_E),
    (GrammarSpec.tool_calls(TOOLS, "auto"), "I'll look that up.\n" + CALL_W),
]


@pytest.fixture(scope="module", params=[False, True], ids=["text-markers", "token-markers"])
def env(request: pytest.FixtureRequest) -> tuple[Any, Any]:
    tok = make_tokenizer(request.param)
    return tok, build_backend(tok, VOCAB_SIZE, [eos_id(tok)])


def walk(matcher: Any, ids: list[int]) -> torch.Tensor:
    """Accept `ids` one by one, checking each is allowed by the mask first; returns the last mask."""
    bm = allocate_bitmask(1, VOCAB_SIZE)
    for i, t in enumerate(ids):
        matcher.fill_bitmask(bm, 0)
        assert t in allowed(bm), f"token {i} ({t}) masked"
        assert matcher.accept_token(t)
    matcher.fill_bitmask(bm, 0)
    return bm


def finish(matcher: Any, tok: Any, text: str) -> set[int]:
    """Walk `text`; the set of tokens allowed after it."""
    return allowed(walk(matcher, encode(tok, text)))


# -- specs ----------------------------------------------------------------------------------------

def test_spec_keys_are_stable_and_order_sensitive() -> None:
    a = GrammarSpec.json_schema({"type": "object", "properties": {"a": {}, "b": {}}})
    assert a.key == GrammarSpec.json_schema(json.dumps(a.schema, indent=2)).key and a == GrammarSpec.json_schema(a.text)
    assert a.key != GrammarSpec.json_schema({"type": "object", "properties": {"b": {}, "a": {}}}).key
    assert len({GrammarSpec.regex("a"), GrammarSpec.regex("a"), GrammarSpec.choice(["a"])}) == 2
    named = GrammarSpec.tool_calls(TOOLS, ToolCallMode.NAMED, name="get_weather")
    assert named.tools == TOOLS[:1] and not named.parallel  # normalised: shares a key with any list naming it
    assert named.key == GrammarSpec.tool_calls(TOOLS[:1], "named", name="get_weather").key
    assert GrammarSpec.tool_calls(TOOLS, parallel=False).key != GrammarSpec.tool_calls(TOOLS).key


@pytest.mark.parametrize("make, words", [
    (lambda: GrammarSpec.json_schema("{not json"), "not valid JSON"),
    (lambda: GrammarSpec.json_schema([1, 2]), "must be a JSON object"),
    (lambda: GrammarSpec.choice([]), "non-empty list"),
    (lambda: GrammarSpec.regex(""), "non-empty pattern"),
    (lambda: GrammarSpec.tool_calls([]), "at least one tool"),
    (lambda: GrammarSpec.tool_calls(TOOLS + TOOLS[:1]), "unique"),
    (lambda: GrammarSpec.tool_calls(TOOLS, "named", name="nope"), "'nope'"),
    (lambda: ToolSpec(""), "non-empty function name"),
])
def test_bad_specs_raise_grammar_error(make: Any, words: str) -> None:
    with pytest.raises(GrammarError, match=words):
        make()


# -- compile, masks, termination ------------------------------------------------------------------

@pytest.mark.parametrize("spec, text", VALID, ids=[s.kind.value + str(i) for i, (s, _) in enumerate(VALID)])
def test_valid_output_is_allowed_token_by_token(env: Any, spec: GrammarSpec, text: str) -> None:
    tok, backend = env
    m = backend.compile(spec).matcher()
    after = finish(m, tok, text)
    assert m.is_accepting() and eos_id(tok) in after
    assert m.accept_token(eos_id(tok)) and m.is_terminated()


def test_invalid_token_is_masked_and_rejected_without_harm(env: Any) -> None:
    tok, backend = env
    m = backend.compile(GrammarSpec.json_schema(SCHEMA)).matcher()
    bad = encode(tok, "x")[0]
    bm = walk(m, encode(tok, '{"name": "Ada", "age": '))
    assert bad not in allowed(bm)
    assert not m.accept_token(bad)  # refused, and the matcher carries on as before
    finish(m, tok, "36}")
    assert m.is_terminated()


def test_eos_only_when_complete_and_padding_never(env: Any) -> None:
    tok, backend = env
    eos, pads = eos_id(tok), set(range(len(tok), VOCAB_SIZE))
    m = backend.compile(GrammarSpec.json_schema(SCHEMA)).matcher()
    ids = encode(tok, '{"name": "Ada", "age": 3}')
    bm = allocate_bitmask(1, VOCAB_SIZE)
    for t in ids:
        m.fill_bitmask(bm, 0)
        assert eos not in allowed(bm) and not allowed(bm) & pads and not m.is_terminated()
        m.accept_token(t)
    m.fill_bitmask(bm, 0)
    assert m.is_terminated() and allowed(bm) == {eos}


def test_accepting_is_not_terminated_for_open_ended_grammars(env: Any) -> None:
    tok, backend = env
    m = backend.compile(GrammarSpec.regex("[0-9]+")).matcher()
    after = finish(m, tok, "12")
    assert m.is_accepting() and not m.is_terminated()
    assert eos_id(tok) in after and encode(tok, "3")[0] in after


def test_rollback_and_reset(env: Any) -> None:
    tok, backend = env
    m = backend.compile(GrammarSpec.json_schema(SCHEMA)).matcher()
    before = walk(m, encode(tok, '{"name": '))
    walk(m, encode(tok, '"Ada", "age'))
    m.rollback(len(encode(tok, '"Ada", "age')))
    bm = allocate_bitmask(1, VOCAB_SIZE)
    m.fill_bitmask(bm, 0)
    assert torch.equal(bm, before)
    m.reset()
    m.fill_bitmask(bm, 0)
    assert torch.equal(bm, walk(backend.compile(GrammarSpec.json_schema(SCHEMA)).matcher(), []))


def test_batched_fill_equals_row_by_row(env: Any) -> None:
    tok, backend = env
    compiled = [backend.compile(s) for s, _ in VALID[:4]]
    ms = [c.matcher() for c in compiled]
    for m, (_, text) in zip(ms, VALID[:4]):
        walk(m, encode(tok, text)[:2])
    batch, single = allocate_bitmask(6, VOCAB_SIZE), allocate_bitmask(6, VOCAB_SIZE)
    backend.fill_bitmasks(ms, batch, rows=[5, 0, 3, 1])
    for m, r in zip(ms, [5, 0, 3, 1]):
        m.fill_bitmask(single, r)
    assert torch.equal(batch, single)


@pytest.mark.parametrize("spec, words", [
    (GrammarSpec.regex("a(b"), "invalid regex.*unclosed group"),
    (GrammarSpec.json_schema({"type": "foo"}), "invalid JSON schema.*foo"),
    (GrammarSpec.json_schema({"type": "string", "format": "bogus"}), "invalid JSON schema.*bogus"),
    (GrammarSpec.grammar("start: foo("), "invalid grammar"),
    (GrammarSpec.grammar("start: undefined_rule"), "invalid grammar.*undefined_rule"),
    (GrammarSpec.grammar("this is not a grammar"), "invalid grammar.*GBNF"),
    (GrammarSpec.json_schema(False), "admits no document"),
    (GrammarSpec.json_schema({"$ref": "http://example.com/s.json"}), "example.com"),
])
def test_compile_errors_name_the_problem(env: Any, spec: GrammarSpec, words: str) -> None:
    with pytest.raises(GrammarError, match="(?s)" + words) as info:
        env[1].compile(spec)
    assert isinstance(info.value, InvalidRequestError)  # the HTTP layer turns it into a 400


def test_schema_features_and_leniency_for_tools(env: Any) -> None:
    tok, backend = env
    refs = {"type": "object", "properties": {"a": {"$ref": "#/$defs/n"}}, "required": ["a"],
            "$defs": {"n": {"type": "integer"}}}
    for spec, text in [(GrammarSpec.json_schema(refs), '{"a": 3}'), (GrammarSpec.json_schema(True), "[1]"),
                       (GrammarSpec.regex(r"^[a-z]+$"), "abc")]:
        m = backend.compile(spec).matcher()
        finish(m, tok, text)
        assert m.is_accepting()
    odd = {"type": "object", "properties": {"u": {"type": "string", "format": "no-such-format"}}}
    with pytest.raises(GrammarError, match="no-such-format"):
        backend.compile(GrammarSpec.json_schema(odd))  # a response format is enforced exactly
    backend.compile(GrammarSpec.tool_calls([ToolSpec("f", odd)], "required"))  # tool schemas: lenient


# -- apply_bitmask ---------------------------------------------------------------------------------

def test_apply_bitmask_matches_a_reference_and_masks_padding() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 100)
    bitmask = torch.randint(-2**31, 2**31 - 1, (5, 3), dtype=torch.int32)  # 96 ids: columns 96.. are past it
    expected = logits.clone()
    for r in (1, 3, 4):
        for t in range(100):
            if t >= 96 or not (int(bitmask[r, t // 32]) >> (t % 32)) & 1:
                expected[r, t] = float("-inf")
    out = logits.clone()
    apply_bitmask(out, bitmask, rows=[1, 3, 4])
    assert torch.equal(out, expected)
    everything = logits.clone()
    apply_bitmask(everything, allocate_bitmask(5, 100))
    assert torch.equal(everything, logits)  # a fresh bitmask allows everything


# -- compile cache ---------------------------------------------------------------------------------

class CountingBackend:
    """Wraps a backend; counts compiles and makes each take a while, so calls overlap."""

    def __init__(self, inner: Any, delay: float = 0.05) -> None:
        self.inner, self.delay, self.calls = inner, delay, 0
        self._lock = threading.Lock()

    def compile(self, spec: GrammarSpec) -> Any:
        with self._lock:
            self.calls += 1
        time.sleep(self.delay)
        return self.inner.compile(spec)


def test_cache_hit_returns_the_same_object_and_concurrent_calls_compile_once(env: Any) -> None:
    backend = CountingBackend(env[1])
    compiler = GrammarCompiler(backend, max_workers=2)  # type: ignore[arg-type]
    spec = GrammarSpec.json_schema(SCHEMA)
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(compiler.get(GrammarSpec.json_schema(SCHEMA))))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert backend.calls == 1 and all(r is results[0] for r in results)
    assert compiler.compile(spec).result() is results[0] and compiler.stats.misses == 1


def test_compile_errors_are_cached_and_the_cache_is_bounded(env: Any) -> None:
    backend = CountingBackend(env[1], delay=0)
    compiler = GrammarCompiler(backend, cache_size=2, error_cache_size=1)  # type: ignore[arg-type]
    for _ in range(3):
        with pytest.raises(GrammarError):
            compiler.get(GrammarSpec.regex("a(b"))
    assert backend.calls == 1 and compiler.stats.errors == 1
    for p in ("a", "b", "c"):
        compiler.get(GrammarSpec.regex(p))
    assert len(compiler) == 2
    compiler.get(GrammarSpec.regex("a"))  # evicted: compiles again
    assert backend.calls == 5
    compiler.close()


def test_compile_runs_off_the_callers_thread(env: Any) -> None:
    seen: list[str] = []

    class Spy(CountingBackend):
        def compile(self, spec: GrammarSpec) -> Any:
            seen.append(threading.current_thread().name)
            return super().compile(spec)

    GrammarCompiler(Spy(env[1], delay=0)).get(GrammarSpec.choice(["x"]))  # type: ignore[arg-type]
    assert seen and seen[0].startswith("awqserve-grammar")


# -- hermes tool calls -----------------------------------------------------------------------------

def _tokens(tok: Any, text: str) -> set[int]:
    return set(encode(tok, text))


def test_required_allows_calls_only(env: Any) -> None:
    tok, backend = env
    compiled = backend.compile(GrammarSpec.tool_calls(TOOLS, "required"))
    first = allowed(walk(compiled.matcher(), []))
    assert eos_id(tok) not in first and not first & _tokens(tok, "The")
    after = finish(compiled.matcher(), tok, CALL_W + "\n")
    assert eos_id(tok) in after and not after & _tokens(tok, "The")
    m = compiled.matcher()  # arguments are checked against the tool's schema
    walk(m, encode(tok, '<tool_call>\n{"name": "get_weather", "arguments": {"city": '))
    assert encode(tok, "5")[0] not in allowed(walk(m, []))


def test_named_allows_one_call_to_that_function(env: Any) -> None:
    tok, backend = env
    compiled = backend.compile(GrammarSpec.tool_calls(TOOLS, "named", name="send_email"))
    m = compiled.matcher()
    walk(m, encode(tok, '<tool_call>\n{"name": "'))
    assert not allowed(walk(m, [])) & _tokens(tok, "get")
    after = finish(compiled.matcher(), tok, CALL_E)
    assert eos_id(tok) in after and encode(tok, CALL_W)[0] not in after


def test_auto_allows_free_text_then_a_constrained_call(env: Any) -> None:
    tok, backend = env
    compiled = backend.compile(GrammarSpec.tool_calls(TOOLS, "auto"))
    assert eos_id(tok) in finish(compiled.matcher(), tok, "No tools needed: 2 + 2 = 4.")
    m = compiled.matcher()
    walk(m, encode(tok, 'Let me check.\n<tool_call>\n{"name": "'))
    assert not allowed(walk(m, [])) & _tokens(tok, "The")  # the trigger has started a call
    after = finish(compiled.matcher(), tok, "Sure.\n" + CALL_W + "\n" + CALL_E)
    assert eos_id(tok) in after and not after & _tokens(tok, "The")  # after calls: calls or the end


def test_parallel_false_allows_a_single_call(env: Any) -> None:
    tok, backend = env
    for mode, text in (("required", CALL_W + "\n"), ("auto", "Ok.\n" + CALL_W + "\n")):
        after = finish(backend.compile(GrammarSpec.tool_calls(TOOLS, mode, parallel=False)).matcher(), tok, text)
        assert eos_id(tok) in after
        assert all(t == eos_id(tok) or not tok.decode([t]).strip() for t in after)  # whitespace or the end


def test_after_a_call_only_calls_whitespace_or_the_end(env: Any) -> None:
    tok, backend = env
    after = finish(backend.compile(GrammarSpec.tool_calls(TOOLS, "auto")).matcher(), tok, "Ok.\n" + CALL_W)
    texts = {tok.decode([t]) for t in after - {eos_id(tok)}}
    assert texts and all(not x.strip() or "<tool_call>".startswith(x.lstrip()) for x in texts)


def test_eos_ends_the_output_and_rolls_back(env: Any) -> None:
    tok, _ = env
    eos = [eos_id(tok), tok.convert_tokens_to_ids("<|endoftext|>")]
    backend = build_backend(tok, VOCAB_SIZE, eos)
    m = backend.compile(GrammarSpec.regex("[0-9]+")).matcher()
    assert set(eos) <= finish(m, tok, "12")
    assert m.accept_token(eos[1]) and m.is_terminated()
    assert allowed(walk(m, [])) == set(eos) and not m.accept_token(encode(tok, "3")[0])
    m.rollback(1)
    assert not m.is_terminated() and m.accept_token(encode(tok, "3")[0])
    assert not backend.compile(GrammarSpec.regex("[0-9]+")).matcher().accept_token(eos[0])  # not yet complete


def test_auto_free_text_may_hold_qwen_text_tokens() -> None:
    tok = make_tokenizer(True)
    backend = build_backend(tok, VOCAB_SIZE, [eos_id(tok)])
    think = tok.convert_tokens_to_ids("<think>")
    assert think in backend.traits.text_token_ids and backend.traits.open_is_token
    m = backend.compile(GrammarSpec.tool_calls(TOOLS, "auto")).matcher()
    after = finish(m, tok, "<think>\nweather first\n</think>\n\n" + CALL_W)
    assert eos_id(tok) in after and think not in after
    assert GrammarSpec.tool_calls(TOOLS).kind is GrammarKind.TOOL_CALLS
