"""Constrained decoding inside the engine (no weights): FakeModel's pseudo-random logits, masked by real
llguidance grammars over a small real tokenizer, through the scheduler, sampler and output processor.

Checks the issue's list: every output validates; n>1 (a matcher per sample), seeds (batch-independent),
logprobs (of the unconstrained distribution), stop strings, preemption (tokens kept, grammar state
valid), a request cut by max_tokens ends "length", a complete grammar stops the request ("stop"),
and a bad spec is refused at add_request.
"""
from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from _engine_fakes import FakeModel, run_to_completion
from _structured_tokenizer import VOCAB_SIZE, make_tokenizer

from awqserve.config.engine_config import EngineConfig
from awqserve.engine.llm_engine import LLMEngine
from awqserve.engine.sampling_params import SamplingParams
from awqserve.errors import InvalidRequestError
from awqserve.structured import GrammarSpec

SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 99}},
          "required": ["name", "age"], "additionalProperties": False}


class _Model(FakeModel):
    """FakeModel over the test tokenizer's vocabulary, EOS never preferred on its own."""

    def __init__(self) -> None:
        super().__init__(vocab=VOCAB_SIZE)


def _engine(**config: Any) -> LLMEngine:
    tok = make_tokenizer(False)
    cfg = {"device": "cpu", "block_size": 4, "max_model_len": 256, "max_num_batched_tokens": 64, "max_num_seqs": 8,
           "kv_cache_memory": 1 << 20, **config}
    model = _Model()
    engine = LLMEngine.from_config(EngineConfig(**cfg), model=model, tokenizer=tok)  # type: ignore[arg-type]
    return engine


def _prompt(i: int) -> list[int]:
    return [5 + i, 9, 14, 3 + i, 27]


def _params(**kw: Any) -> SamplingParams:
    base: dict[str, Any] = {"temperature": 0.0, "max_tokens": 120, "grammar": GrammarSpec.json_schema(SCHEMA)}
    base.update(kw)
    return SamplingParams(**base)


def _texts(final: dict[str, Any], rid: str) -> list[str]:
    return [o.text for o in final[rid].outputs]


def test_outputs_validate_and_stop_when_complete() -> None:
    eng = _engine()
    for i in range(4):
        eng.add_request(str(i), _prompt(i), _params())
    final = run_to_completion(eng)
    for i in range(4):
        out = final[str(i)].outputs[0]
        jsonschema.validate(json.loads(out.text), SCHEMA)
        assert out.finish_reason == "stop"


def test_n2_seeds_logprobs_and_batch_independence() -> None:
    params = _params(n=2, temperature=1.0, seed=11, logprobs=2)
    alone = _engine()
    alone.add_request("a", _prompt(0), params)
    solo = run_to_completion(alone)["a"]
    crowd = _engine()
    for i in range(4):
        crowd.add_request(str(i), _prompt(i), _params(temperature=0.7, seed=i))
    crowd.add_request("a", _prompt(0), params)
    together = run_to_completion(crowd)["a"]
    assert [o.token_ids for o in solo.outputs] == [o.token_ids for o in together.outputs]
    for o in solo.outputs:
        jsonschema.validate(json.loads(o.text), SCHEMA)
        assert o.logprobs is not None and len(o.logprobs) == len(o.token_ids)
        # logprobs are the model's own: the sampled token need not be its top choice
        assert all(lp.logprob <= 0.0 for lp in o.logprobs)


def test_preemption_keeps_the_grammar_state() -> None:
    prompts = [_prompt(i) * 3 for i in range(3)]
    params = _params(max_tokens=45)
    free = _engine(max_model_len=64)
    for i, p in enumerate(prompts):
        free.add_request(str(i), p, params)
    want = run_to_completion(free)
    # 20 blocks of 4 tokens (32 bytes each for FakeModel) cannot hold three 15 + 45 token sequences at once
    tight = _engine(kv_cache_memory=20 * 32, max_model_len=64, max_num_batched_tokens=16)
    for i, p in enumerate(prompts):
        tight.add_request(str(i), p, params)
    got = run_to_completion(tight)
    assert tight.scheduler.num_preemptions > 0
    for i in range(3):
        assert got[str(i)].outputs[0].token_ids == want[str(i)].outputs[0].token_ids
        if got[str(i)].outputs[0].finish_reason == "stop":
            jsonschema.validate(json.loads(got[str(i)].outputs[0].text), SCHEMA)


def test_max_tokens_cut_is_length_and_stop_strings_still_apply() -> None:
    eng = _engine()
    eng.add_request("cut", _prompt(1), _params(max_tokens=3))
    eng.add_request("stop", _prompt(2), _params(stop=['"age"']))
    final = run_to_completion(eng)
    assert final["cut"].outputs[0].finish_reason == "length"
    out = final["stop"].outputs[0]
    assert out.finish_reason == "stop" and out.stop_reason == '"age"' and '"age"' not in out.text


@pytest.mark.parametrize("spec", [GrammarSpec.regex("[0-9]{3}-[a-z]{2}"), GrammarSpec.choice(["yes", "no"])])
def test_regex_and_choice(spec: GrammarSpec) -> None:
    eng = _engine()
    eng.add_request("r", _prompt(3), _params(grammar=spec))
    text = run_to_completion(eng)["r"].outputs[0].text
    assert text in ("yes", "no") if spec.choices else len(text) == 6 and text[3] == "-"


def test_bad_spec_is_refused_at_add_request() -> None:
    eng = _engine()
    with pytest.raises(InvalidRequestError, match="invalid regex"):
        eng.add_request("bad", _prompt(0), _params(grammar=GrammarSpec.regex("a(")))
    assert not eng.has_unfinished()
