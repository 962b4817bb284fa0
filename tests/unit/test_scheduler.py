"""Scheduler (token budget, chunking, limits, preemption, FIFO) and the LLMEngine around it, on a fake model."""
from __future__ import annotations

import pytest

from _engine_fakes import FakeModel, make_engine, reference_greedy, run_to_completion
from awqserve.engine.block_manager import BlockManager
from awqserve.engine.request import Request, RequestStatus
from awqserve.engine.sampling_params import SamplingParams
from awqserve.engine.batch import ModelRunnerOutput
from awqserve.engine.scheduler import Scheduler

GREEDY = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)


def _sched(num_blocks: int = 64, budget: int = 8, max_seqs: int = 4, bs: int = 4, prefix: bool = False) -> Scheduler:
    return Scheduler(max_num_seqs=max_seqs, max_num_batched_tokens=budget,
                     block_manager=BlockManager(num_blocks, bs, prefix))


def _req(rid: str, n: int, max_tokens: int = 8) -> Request:
    return Request(rid, list(range(1, n + 1)), GREEDY, max_tokens=max_tokens)


def _step(s: Scheduler) -> list[tuple[str, int]]:
    """One schedule + a fake runner that samples token 7 for every request that reaches its end."""
    out = s.schedule()
    toks = [7 if r.num_computed_tokens + n == r.num_tokens else None
            for r, n in zip(out.requests, out.num_scheduled_tokens)]
    s.update_from_output(out, ModelRunnerOutput(toks))
    return [(r.request_id, n) for r, n in zip(out.requests, out.num_scheduled_tokens)]


def test_chunked_prefill_then_decode() -> None:
    s = _sched(budget=8)
    s.add_request(_req("a", 20))
    assert [_step(s) for _ in range(4)] == [[("a", 8)], [("a", 8)], [("a", 4)], [("a", 1)]]


def test_budget_is_shared_running_first() -> None:
    s = _sched(budget=8)
    s.add_request(_req("a", 6))
    s.add_request(_req("b", 6))
    assert _step(s) == [("a", 6), ("b", 2)]
    assert _step(s) == [("a", 1), ("b", 4)]  # a decodes, b's prefill continues
    assert _step(s) == [("a", 1), ("b", 1)]


def test_max_num_seqs_bounds_the_batch() -> None:
    s = _sched(budget=100, max_seqs=2)
    for i in range(4):
        s.add_request(_req(f"r{i}", 3))
    assert [rid for rid, _ in _step(s)] == ["r0", "r1"]
    assert len(s.waiting) == 2


def test_fifo_admission_order() -> None:
    s = _sched(budget=6, max_seqs=8)
    for i in range(6):
        s.add_request(_req(f"r{i}", 4))
    admitted: list[str] = []
    for _ in range(12):  # running requests go first; the leftover budget admits the queue head
        admitted += [rid for rid, _ in _step(s) if rid not in admitted]
    assert admitted == ["r0", "r1", "r2", "r3", "r4", "r5"]


def test_preemption_of_newest_when_blocks_run_out() -> None:
    s = _sched(num_blocks=4, budget=64, bs=4)
    old, new = _req("old", 4, max_tokens=8), _req("new", 4, max_tokens=8)
    s.add_request(old)
    s.add_request(new)
    _step(s)  # both prefill: 2 blocks in use
    for _ in range(8):
        _step(s)
    assert s.num_preemptions >= 1
    assert new.metrics.num_preemptions >= 1 and old.metrics.num_preemptions == 0
    # The preempted request resumes and recomputes its tokens; nothing was lost.
    assert new.status in (RequestStatus.RUNNING, RequestStatus.WAITING)
    assert new.num_output_tokens >= 1


def test_engine_preemption_gives_the_same_tokens() -> None:
    prompts = [list(range(1, 13)), list(range(20, 31)), list(range(40, 49))]
    # 20 blocks of 4 tokens cannot hold three 12+24-token sequences at once.
    eng = make_engine(kv_cache_memory=20 * 4 * 2 * 4, max_model_len=64, max_num_batched_tokens=16)
    params = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
    for i, p in enumerate(prompts):
        eng.add_request(str(i), p, params)
    final = run_to_completion(eng)
    assert eng.scheduler.num_preemptions > 0
    for i, p in enumerate(prompts):
        assert final[str(i)].outputs[0].token_ids == reference_greedy(p, 24)
    assert eng.scheduler.block_manager.num_free_blocks == eng.runner.num_blocks


@pytest.mark.parametrize("budget", [1, 3, 16, 256])
def test_engine_matches_reference_for_any_budget(budget: int) -> None:
    prompts = [list(range(1, 1 + n)) for n in (1, 5, 17, 30)]
    eng = make_engine(max_num_batched_tokens=budget)
    for i, p in enumerate(prompts):
        eng.add_request(str(i), p, GREEDY)
    final = run_to_completion(eng)
    for i, p in enumerate(prompts):
        assert final[str(i)].outputs[0].token_ids == reference_greedy(p, 8)
        assert final[str(i)].outputs[0].finish_reason == "length"


def test_abort_frees_blocks_and_reports_abort() -> None:
    eng = make_engine()
    eng.add_request("a", list(range(1, 30)), SamplingParams(max_tokens=50, ignore_eos=True))
    eng.add_request("b", list(range(1, 10)), SamplingParams(max_tokens=50, ignore_eos=True))
    for _ in range(3):
        eng.step()
    assert eng.scheduler.block_manager.num_free_blocks < eng.runner.num_blocks
    assert eng.abort("a") and eng.abort("b")
    assert eng.scheduler.block_manager.num_free_blocks == eng.runner.num_blocks
    outs = eng.step()
    assert {o.request_id for o in outs} == {"a", "b"}
    assert all(o.finished and o.outputs[0].finish_reason == "abort" for o in outs)
    assert not eng.has_unfinished() and not eng.abort("a")


def test_prefix_cache_hit_in_engine() -> None:
    eng = make_engine()
    prompt = list(range(1, 23))
    eng.add_request("a", prompt, GREEDY)
    first = run_to_completion(eng)["a"]
    eng.add_request("b", prompt, GREEDY)
    second = run_to_completion(eng)["b"]
    # 5 full blocks of 4 shared, 1 of the 2 tokens after them copied from a's kept block; only the
    # last token is computed (it must be, for logits). The fake model reads every position back.
    assert second.num_cached_tokens == 21
    assert second.outputs[0].token_ids == first.outputs[0].token_ids == reference_greedy(prompt, 8)
    snap = eng.stats.snapshot()
    assert snap.prefix_cache_hits >= 21 and snap.prefix_cache_queries >= 44


def test_next_turn_copies_the_previous_answers_partial_block() -> None:
    eng = make_engine()
    prompt = list(range(1, 12))
    first = run_to_completion(_add(eng, "a", prompt))["a"]
    answer = list(first.outputs[0].token_ids)
    turn2 = prompt + answer + [40, 41, 42]  # the conversation so far plus a new message
    second = run_to_completion(_add(eng, "b", turn2))["b"]
    # a computed its 11 prompt tokens and 7 of its 8 answer tokens (the last was never fed back).
    assert second.num_cached_tokens == 18
    assert second.outputs[0].token_ids == reference_greedy(turn2, 8)


def test_copy_source_recycled_in_the_same_step_is_read_first() -> None:
    # 8 blocks of 4. b copies 1 token from a's second block; c, admitted in the same step, needs 6
    # fresh blocks and so recycles every evictable block, the copy source included: the copy must
    # read it before c's forward writes there. Later steps preempt (b + c need 12 blocks).
    eng = make_engine(kv_cache_memory=8 * 4 * 2 * 4, max_model_len=32, max_num_batched_tokens=64)
    prompt = list(range(1, 7))
    run_to_completion(_add(eng, "a", prompt))
    eng.add_request("b", prompt, GREEDY)
    eng.add_request("c", list(range(100, 124)), GREEDY)
    seen = []
    execute = eng.runner.execute

    def spy(sched):  # type: ignore[no-untyped-def]
        if sched.kv_copies:
            seen.append((sched.kv_copies[0], [list(r.block_ids) for r in sched.requests]))
        return execute(sched)

    eng.runner.execute = spy
    out = run_to_completion(eng)
    copy, tables = seen[0]
    assert copy.src in tables[1]  # recycled by c in the very step that copies from it
    assert out["b"].outputs[0].token_ids == reference_greedy(prompt, 8)
    assert out["c"].outputs[0].token_ids == reference_greedy(list(range(100, 124)), 8)


def _add(eng, rid: str, prompt: list[int]):  # type: ignore[no-untyped-def]
    eng.add_request(rid, prompt, GREEDY)
    return eng


def test_n_samples_share_prompt_blocks() -> None:
    eng = make_engine()
    prompt = list(range(1, 18))  # 4 full blocks + 1 token
    eng.add_request("g", prompt, SamplingParams(n=3, temperature=0.0, max_tokens=6, ignore_eos=True))
    shared_seen = False
    final = None
    while eng.has_unfinished():
        running = eng.scheduler.running
        if len(running) == 3:
            tables = [r.block_ids for r in running]
            shared_seen |= tables[0][:4] == tables[1][:4] == tables[2][:4]
        for o in eng.step():
            final = o if o.finished else final
    assert shared_seen
    assert final is not None and [c.index for c in final.outputs] == [0, 1, 2]
    ref = reference_greedy(prompt, 6)
    assert all(c.token_ids == ref for c in final.outputs)


def test_hybrid_model_uses_state_slots_without_prefix_caching() -> None:
    eng = make_engine(model=FakeModel(hybrid=True), max_num_batched_tokens=5, max_num_seqs=3)
    assert not eng.scheduler.block_manager.enable_prefix_caching and eng.runner.num_state_slots == 3
    prompts = [list(range(1, 1 + n)) for n in (4, 9, 13, 6)]
    for i, p in enumerate(prompts):
        eng.add_request(str(i), p, GREEDY)
    final = run_to_completion(eng)  # FakeModel asserts each slot holds its own sequence's state
    for i, p in enumerate(prompts):
        assert final[str(i)].outputs[0].token_ids == reference_greedy(p, 8)
    assert eng.scheduler.state_pool.num_free == 3


def test_step_error_fails_only_that_step() -> None:
    eng = make_engine(model=FakeModel(fail_on_token=13))
    eng.add_request("bad", [1, 2, 13], GREEDY)
    outs = eng.step()
    assert len(outs) == 1 and outs[0].finished and outs[0].error is not None
    assert outs[0].error.status == 500  # type: ignore[attr-defined]
    eng.add_request("good", [1, 2, 3], GREEDY)
    assert run_to_completion(eng)["good"].outputs[0].token_ids == reference_greedy([1, 2, 3], 8)
    assert eng.scheduler.block_manager.num_free_blocks == eng.runner.num_blocks


def test_add_request_validation() -> None:
    eng = make_engine(max_model_len=32)
    with pytest.raises(ValueError, match="max_model_len"):
        eng.add_request("long", list(range(32)), GREEDY)
    with pytest.raises(ValueError, match="at least one"):
        eng.add_request("empty", [], GREEDY)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        eng.add_request("oov", [10_000], GREEDY)
    eng.add_request("ok", list(range(1, 30)), SamplingParams(max_tokens=None, temperature=0.0, ignore_eos=True))
    with pytest.raises(ValueError, match="already in use"):
        eng.add_request("ok", [1], GREEDY)
    out = run_to_completion(eng)["ok"].outputs[0]
    assert len(out.token_ids) == 3 and out.finish_reason == "length"  # capped by max_model_len


def test_stats_are_published() -> None:
    eng = make_engine()
    eng.add_request("a", list(range(1, 10)), GREEDY)
    run_to_completion(eng)
    snap = eng.stats.snapshot()
    assert snap.prompt_tokens == 9 and snap.generation_tokens == 8
    assert snap.finished == {"length": 1} and snap.num_kv_blocks == eng.runner.num_blocks
    assert snap.num_running == 0 and snap.kv_usage == 0.0


def test_prompt_logprobs_with_chunking_and_preemption() -> None:
    params = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True, prompt_logprobs=2, logprobs=1)
    prompts = [list(range(1, 13)), list(range(20, 31)), list(range(40, 49))]

    def run(**kw: object) -> list:  # type: ignore[type-arg]
        eng = make_engine(**kw)
        for i, p in enumerate(prompts):
            eng.add_request(str(i), p, params)
        final = run_to_completion(eng)
        return [final[str(i)] for i in range(3)], eng.scheduler.num_preemptions

    ref, _ = run(max_num_batched_tokens=256)
    tight, preemptions = run(kv_cache_memory=20 * 4 * 2 * 4, max_model_len=64, max_num_batched_tokens=5)
    assert preemptions > 0
    for a, b, p in zip(ref, tight, prompts):
        assert len(a.prompt_logprobs) == len(b.prompt_logprobs) == len(p)
        assert [(x.token_id, round(x.logprob, 5)) for x in a.prompt_logprobs[1:]] == \
               [(x.token_id, round(x.logprob, 5)) for x in b.prompt_logprobs[1:]]
        assert len(b.outputs[0].logprobs) == 24
        assert a.outputs[0].token_ids == b.outputs[0].token_ids
