"""Property: whatever a sampler picks among the allowed tokens, the output stays valid.

Random small JSON schemas (objects of strings, integers, enums, booleans, arrays, nested objects)
and random walks that pick uniformly among the tokens the mask allows. At every step the mask is
non-empty (the prefix can still be completed); when the walk ends (EOS picked, or only EOS left)
the text parses as JSON and validates against the schema. The same for hermes tool calls: every
call parses and its arguments validate against that tool's parameters.

Bounds (maxLength, maxItems, integer ranges) keep every walk finite: uniform picks inside a string
would otherwise rarely close it.
"""
from __future__ import annotations

import json
import random
import re
from typing import Any

import jsonschema
import pytest
from _structured_tokenizer import VOCAB_SIZE, allowed, eos_id, make_tokenizer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from awqserve.structured import GrammarSpec, ToolSpec, allocate_bitmask, build_backend

MAX_STEPS = 600
NAMES = ["a", "b", "name", "x_1", "city", "tags"]

scalars = st.one_of(
    st.builds(lambda n: {"type": "string", "maxLength": n}, st.integers(0, 6)),
    st.builds(lambda lo, span: {"type": "integer", "minimum": lo, "maximum": lo + span},
              st.integers(-50, 50), st.integers(0, 200)),
    st.builds(lambda vs: {"enum": vs}, st.lists(st.sampled_from(["red", "green", 3, None, True]),
                                                min_size=1, max_size=3, unique=True)),
    st.just({"type": "boolean"}),
)


def _object(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    def build(props: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
        required = data.draw(st.lists(st.sampled_from(sorted(props)), unique=True)) if props else []
        return {"type": "object", "properties": props, "required": required, "additionalProperties": False}
    return st.builds(build, st.dictionaries(st.sampled_from(NAMES), children, max_size=3), st.data())


schemas = st.recursive(
    scalars,
    lambda inner: st.one_of(
        _object(inner),
        st.builds(lambda items, n: {"type": "array", "items": items, "maxItems": n}, inner, st.integers(0, 3))),
    max_leaves=6,
).filter(lambda s: s.get("type") == "object")
top_schemas = st.one_of(_object(st.one_of(scalars, _object(scalars))), schemas)


@pytest.fixture(scope="module")
def backend() -> Any:
    tok = make_tokenizer(False)
    return tok, build_backend(tok, VOCAB_SIZE, [eos_id(tok)])


def random_walk(tok: Any, matcher: Any, rng: random.Random) -> str:
    """Sample uniformly among allowed tokens until EOS; the decoded text (EOS excluded)."""
    eos, bitmask, out = eos_id(tok), allocate_bitmask(1, VOCAB_SIZE), []
    for _ in range(MAX_STEPS):
        matcher.fill_bitmask(bitmask, 0)
        choices = sorted(allowed(bitmask))
        assert choices, f"dead end after {tok.decode(out)!r}"
        assert max(choices) < len(tok), "a padding id was allowed"
        # uniform among allowed tokens, but take an allowed EOS now and then: open-ended grammars
        # (parallel tool calls) would otherwise walk on past any step bound
        token = eos if eos in choices and rng.random() < 0.2 else rng.choice(choices)
        assert matcher.accept_token(token)
        if token == eos:
            assert matcher.is_terminated()
            return tok.decode(out)
        out.append(token)
    raise AssertionError(f"no EOS within {MAX_STEPS} tokens: {tok.decode(out)!r}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(schema=top_schemas, rng=st.randoms(use_true_random=False))
def test_random_walks_produce_valid_documents(backend: Any, schema: dict[str, Any], rng: random.Random) -> None:
    tok, be = backend
    text = random_walk(tok, be.compile(GrammarSpec.json_schema(schema)).matcher(), rng)
    jsonschema.validate(json.loads(text), schema)


CALL = re.compile(r"<tool_call>\n(.*?)\n</tool_call>", re.S)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(params=st.lists(_object(scalars), min_size=1, max_size=3), parallel=st.booleans(),
       rng=st.randoms(use_true_random=False))
def test_random_walks_produce_valid_tool_calls(backend: Any, params: list[dict[str, Any]], parallel: bool,
                                               rng: random.Random) -> None:
    tok, be = backend
    tools = [ToolSpec(f"tool_{i}", p) for i, p in enumerate(params)]
    spec = GrammarSpec.tool_calls(tools, "required", parallel=parallel)
    text = random_walk(tok, be.compile(spec).matcher(), rng)
    calls = CALL.findall(text)
    assert calls and CALL.sub("", text).strip() == "" and (parallel or len(calls) == 1)
    for body in calls:
        call = json.loads(body)
        jsonschema.validate(call["arguments"], params[int(call["name"].split("_")[1])])
