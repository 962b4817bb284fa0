"""Sampler: greedy, top-k/top-p/min-p masks, penalties, logit bias, seeds, logprobs."""
from __future__ import annotations

import torch

from awqserve.engine.request import Request
from awqserve.engine.sampler import Sampler
from awqserve.engine.sampling_params import SamplingParams

V = 50


def _req(params: SamplingParams, prompt: list[int] | None = None, outputs: list[int] | None = None,
         rid: str = "r", eos: tuple[int, ...] = ()) -> Request:
    r = Request(rid, prompt or [1, 2, 3], params, max_tokens=100, eos_token_ids=eos)
    for t in outputs or []:
        r.all_token_ids.append(t)
    return r


def _logits(rows: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, V, generator=torch.Generator().manual_seed(seed)) * 3


def _draw(params: SamplingParams, logits: torch.Tensor, times: int = 300) -> set[int]:
    sampler = Sampler()
    req = _req(params)
    return {sampler(logits.clone(), [req])[0][0] for _ in range(times)}


def test_greedy_is_argmax_per_row() -> None:
    logits = _logits(4)
    toks, lps = Sampler()(logits.clone(), [_req(SamplingParams(temperature=0.0)) for _ in range(4)])
    assert toks == logits.argmax(-1).tolist() and lps == [None] * 4


def test_top_k_restricts_to_the_k_best() -> None:
    logits = _logits(1)
    allowed = set(logits[0].topk(3).indices.tolist())
    seen = _draw(SamplingParams(temperature=5.0, top_k=3), logits)
    assert seen <= allowed and len(seen) > 1


def test_top_p_keeps_the_smallest_sufficient_prefix() -> None:
    logits = torch.full((1, V), -20.0)
    logits[0, [4, 9, 17]] = torch.tensor([2.0, 1.5, 1.0])  # ~0.5, 0.3, 0.18 of the mass
    assert _draw(SamplingParams(temperature=1.0, top_p=0.1), logits) == {4}
    assert _draw(SamplingParams(temperature=1.0, top_p=0.7), logits) == {4, 9}


def test_min_p_drops_unlikely_tokens() -> None:
    logits = torch.full((1, V), -20.0)
    logits[0, [1, 2, 3]] = torch.tensor([3.0, 2.8, 0.0])
    assert _draw(SamplingParams(temperature=1.0, min_p=0.5), logits) == {1, 2}


def test_combined_top_k_and_top_p_rows_in_one_batch() -> None:
    logits = _logits(2)
    reqs = [_req(SamplingParams(temperature=2.0, top_k=2)), _req(SamplingParams(temperature=2.0, top_p=0.01))]
    allowed0 = set(logits[0].topk(2).indices.tolist())
    for _ in range(100):
        toks, _ = Sampler()(logits.clone(), reqs)
        assert toks[0] in allowed0 and toks[1] == int(logits[1].argmax())


def test_repetition_penalty_discourages_seen_tokens() -> None:
    logits = torch.zeros(1, V)
    logits[0, 5] = 2.0
    logits[0, 6] = 1.5
    req = _req(SamplingParams(temperature=0.0, repetition_penalty=2.0), prompt=[5])
    assert Sampler()(logits.clone(), [req])[0] == [6]  # 2.0 / 2 < 1.5


def test_frequency_and_presence_penalties() -> None:
    logits = torch.zeros(3, V)
    logits[:, 5] = 3.0
    logits[:, 6] = 2.0
    freq = _req(SamplingParams(temperature=0.0, frequency_penalty=0.6), outputs=[5, 5])
    pres = _req(SamplingParams(temperature=0.0, presence_penalty=1.5), outputs=[5, 5])
    few = _req(SamplingParams(temperature=0.0, frequency_penalty=0.4), outputs=[5])
    assert Sampler()(logits.clone(), [freq, pres, few])[0] == [6, 6, 5]


def test_logit_bias_and_min_tokens() -> None:
    logits = _logits(2)
    biased = _req(SamplingParams(temperature=0.0, logit_bias={7: 100.0}))
    eos = int(logits[1].argmax())
    early = _req(SamplingParams(temperature=0.0, min_tokens=2), outputs=[1], eos=(eos,))
    toks, _ = Sampler()(logits.clone(), [biased, early])
    assert toks[0] == 7 and toks[1] != eos


def test_seed_is_reproducible_whatever_the_batch() -> None:
    logits = _logits(4)
    params = SamplingParams(temperature=1.0, seed=1234)

    def run(batch_rows: list[int], target_row: int) -> list[int]:
        sampler = Sampler()
        target = _req(params, rid="seeded")
        others = [_req(SamplingParams(temperature=1.0), rid=f"o{i}") for i in batch_rows]
        out = []
        for _ in range(20):
            reqs = others[:target_row] + [target] + others[target_row:]
            rows = batch_rows[:target_row] + [0] + batch_rows[target_row:]
            out.append(sampler(logits[rows].clone(), reqs)[0][target_row])
        return out

    alone = run([], 0)
    assert alone == run([1, 2, 3], 2) == run([3], 0)
    assert len(set(alone)) > 1  # it really samples


def test_logprobs_come_from_raw_logits() -> None:
    logits = _logits(3)
    reqs = [_req(SamplingParams(temperature=0.0, logprobs=3)), _req(SamplingParams(temperature=0.0)),
            _req(SamplingParams(temperature=0.7, logprobs=0, repetition_penalty=1.3))]
    toks, lps = Sampler()(logits.clone(), reqs)
    raw = torch.log_softmax(logits, -1)
    assert lps[1] is None
    rec0, rec2 = lps[0], lps[2]
    assert rec0 is not None and rec2 is not None
    assert rec0.token_id == toks[0] and abs(rec0.logprob - float(raw[0, toks[0]])) < 1e-5
    assert list(rec0.top) == raw[0].topk(3).indices.tolist()
    assert rec2.top == {} and abs(rec2.logprob - float(raw[2, toks[2]])) < 1e-5


def test_prompt_logprobs_shapes() -> None:
    logits = _logits(4)
    recs = Sampler.prompt_logprobs(logits, [3, 4, 5, 6], 2)
    assert [r.token_id for r in recs] == [3, 4, 5, 6] and all(len(r.top) == 2 for r in recs)
