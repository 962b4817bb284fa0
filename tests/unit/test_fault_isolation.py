"""A failure inside a step fails only the requests it belongs to (issue #16, defect 1 and injected faults).

Before: any exception in a step — one request's seed overflowing its generator, one request's forward —
failed every request batched in that step with the same "engine error". Now the sampler isolates
per-row failures, the engine re-runs a failed batch one request at a time, NaN logit rows fail alone,
and each failure is counted by reason. All on the weight-free FakeModel.
"""
from __future__ import annotations

import pytest

from awqserve.engine.faults import FAULT_ENV
from awqserve.engine.sampling_params import SamplingParams
from awqserve.engine.stats import StatsHolder
from awqserve.errors import RequestError

from _engine_fakes import FakeModel, make_engine, reference_greedy, run_to_completion

GREEDY = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)


def _idle(engine) -> None:  # type: ignore[no-untyped-def]
    """Nothing leaked: every block and request released."""
    bm = engine.scheduler.block_manager
    assert not engine.has_unfinished()
    assert bm.num_free_blocks == bm.num_blocks
    assert len(engine.outputs) == 0
    snap = engine.stats.snapshot()
    assert snap.kv_blocks_used == 0 and snap.tracked_requests == 0


def test_a_seed_that_breaks_sampling_fails_only_its_request() -> None:
    stats = StatsHolder()
    engine = make_engine(stats=stats)
    bad = SamplingParams(temperature=1.0, seed=1, max_tokens=6, ignore_eos=True)
    bad.seed = 2**64  # past the edge's validation: torch cannot seed a generator with it
    engine.add_request("bad", [1, 2, 3], bad)
    engine.add_request("ok", [1, 2], GREEDY)
    engine.add_request("ok-seeded", [4, 5], SamplingParams(temperature=1.0, seed=7, max_tokens=6, ignore_eos=True))
    final = run_to_completion(engine)
    err = final["bad"].error
    assert isinstance(err, RequestError) and err.kind == "sampling_error" and "Overflow" in str(err)
    assert final["ok"].error is None and final["ok"].outputs[0].token_ids == reference_greedy([1, 2], 6)
    assert final["ok-seeded"].error is None and len(final["ok-seeded"].outputs[0].token_ids) == 6
    assert stats.snapshot().failures == {"sampling_error": 1}
    _idle(engine)


def test_a_forward_that_fails_for_one_request_fails_only_that_request() -> None:
    engine = make_engine(model=FakeModel(fail_on_token=13))
    engine.add_request("bad", [1, 13], GREEDY)
    engine.add_request("ok", [1, 2], GREEDY)
    engine.add_request("ok2", [3, 4, 5], GREEDY)
    final = run_to_completion(engine)
    err = final["bad"].error
    assert isinstance(err, RequestError) and err.status == 500 and "injected failure" in str(err)
    assert final["ok"].outputs[0].token_ids == reference_greedy([1, 2], 6)
    assert final["ok2"].outputs[0].token_ids == reference_greedy([3, 4, 5], 6)
    _idle(engine)


def test_a_hybrid_model_fails_the_whole_batch() -> None:
    """Recurrent state is updated in place: re-running a batch would corrupt it, so all of it fails."""
    engine = make_engine(model=FakeModel(fail_on_token=13, hybrid=True))
    engine.add_request("bad", [1, 13], GREEDY)
    engine.add_request("other", [1, 2], GREEDY)
    final = run_to_completion(engine)
    assert final["bad"].error is not None and final["other"].error is not None
    engine.add_request("after", [1, 2], GREEDY)  # the engine serves on
    assert run_to_completion(engine)["after"].outputs[0].token_ids == reference_greedy([1, 2], 6)
    assert engine.scheduler.state_pool is not None and engine.scheduler.state_pool.num_free > 0
    _idle(engine)


@pytest.mark.parametrize(("marker", "kind", "status"), [("__fault_exception__", "internal_error", 500),
                                                        ("__fault_oom__", "out_of_memory", 503),
                                                        ("__fault_nan__", "nan_logits", 500)])
def test_injected_faults_fail_only_the_marked_request(monkeypatch: pytest.MonkeyPatch, marker: str, kind: str,
                                                      status: int) -> None:
    monkeypatch.setenv(FAULT_ENV, "1")
    stats = StatsHolder()
    engine = make_engine(stats=stats)
    engine.add_request("ok", [1, 2], GREEDY)
    engine.add_request("bad", list(f"x {marker} y".encode()), GREEDY)
    engine.add_request("ok2", [7, 8], SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True, n=2))
    final = run_to_completion(engine)
    err = final["bad"].error
    assert isinstance(err, RequestError) and err.kind == kind and err.status == status
    assert final["ok"].error is None and final["ok"].outputs[0].token_ids == reference_greedy([1, 2], 6)
    assert [o.token_ids for o in final["ok2"].outputs] == [reference_greedy([7, 8], 6)] * 2
    assert stats.snapshot().failures == {kind: 1}
    _idle(engine)


def test_fault_injection_is_off_without_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FAULT_ENV, raising=False)
    engine = make_engine()
    engine.add_request("marked", list(b"__fault_exception__"), GREEDY)
    assert run_to_completion(engine)["marked"].error is None
    assert engine.faults is None
