"""Composed constraints: a reasoning block before the constraint, and AUTO tool calls whose only
alternative to calling is an answer in a given format (what agents with an output type send)."""
from __future__ import annotations

import json
from typing import Any

import pytest
from _structured_tokenizer import VOCAB_SIZE, encode, eos_id, make_tokenizer
from test_structured_backend import CALL_W, TOOLS, finish, walk

from awqserve.structured import GrammarSpec, ReasoningPrefix, build_backend
from _structured_tokenizer import allowed

SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"],
          "additionalProperties": False}


@pytest.fixture(scope="module", params=[False, True], ids=["text-markers", "token-markers"])
def env(request: pytest.FixtureRequest) -> tuple[Any, Any]:
    tok = make_tokenizer(request.param)
    return tok, build_backend(tok, VOCAB_SIZE, [eos_id(tok)])


def _accepts(backend: Any, tok: Any, spec: GrammarSpec, text: str) -> bool:
    m = backend.compile(spec).matcher()
    return all(m.accept_token(t) for t in encode(tok, text)) and m.is_accepting()


@pytest.mark.parametrize("text, ok", [
    ('{"answer": 4}', True),
    ('<think>\nThe user wants {"answer": 5}? Two plus two.\n</think>\n\n{"answer": 4}', True),
    ("<think>still thinking", False),
    ('Sure: {"answer": 4}', False),
])
def test_optional_reasoning_then_json(env: Any, text: str, ok: bool) -> None:
    tok, backend = env
    spec = GrammarSpec.json_schema(SCHEMA).after_reasoning(ReasoningPrefix.OPTIONAL)
    assert _accepts(backend, tok, spec, text) is ok


def test_open_reasoning_needs_the_close_first(env: Any) -> None:
    tok, backend = env
    spec = GrammarSpec.json_schema(SCHEMA).after_reasoning("open")
    assert _accepts(backend, tok, spec, 'Two plus two is four.\n</think>\n{"answer": 4}')
    assert not _accepts(backend, tok, spec, '{"answer": 4}')  # the reasoning the prompt opened must end
    m = backend.compile(spec).matcher()
    walk(m, encode(tok, "hmm </think>\n"))
    assert eos_id(tok) not in allowed(walk(m, []))  # after the reasoning, only the JSON answer


def test_reasoning_before_tool_calls(env: Any) -> None:
    tok, backend = env
    spec = GrammarSpec.tool_calls(TOOLS, "required").after_reasoning("optional")
    assert _accepts(backend, tok, spec, "<think>\nweather needs a tool\n</think>\n" + CALL_W)
    assert not _accepts(backend, tok, spec, "<think>\nno\n</think>\nIt is sunny.")


def test_auto_tools_with_an_answer_format(env: Any) -> None:
    tok, backend = env
    spec = GrammarSpec.tool_calls(TOOLS, "auto").with_answer(GrammarSpec.json_schema(SCHEMA))
    assert _accepts(backend, tok, spec, CALL_W)
    assert _accepts(backend, tok, spec, '{"answer": 4}')
    assert not _accepts(backend, tok, spec, "The answer is 4.")  # free text is not an answer here
    assert eos_id(tok) in finish(backend.compile(spec).matcher(), tok, '{"answer": 4}')


def test_keys_name_the_composition() -> None:
    base = GrammarSpec.json_schema(SCHEMA)
    keys = {base.key, base.after_reasoning("optional").key, base.after_reasoning("open").key,
            GrammarSpec.tool_calls(TOOLS, "auto").with_answer(base).key, GrammarSpec.tool_calls(TOOLS, "auto").key}
    assert len(keys) == 5
    assert json.loads(base.after_reasoning("open").text) == SCHEMA  # the inner constraint is unchanged
