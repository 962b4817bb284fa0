"""AsyncEngine: streaming, concurrency, cancellation → abort, errors, death, idle without busy loop."""
from __future__ import annotations

import asyncio
import time

import pytest

from _engine_fakes import FakeModel, make_engine, reference_greedy
from awqserve.config.engine_config import EngineConfig
from awqserve.engine.async_engine import AsyncEngine
from awqserve.engine.outputs import RequestOutput
from awqserve.engine.sampling_params import SamplingParams
from awqserve.errors import ContextLengthError, EngineDeadError, RequestError

GREEDY = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)


def _engine(model: FakeModel | None = None, **kw: object) -> AsyncEngine:
    def factory(cfg: EngineConfig, stats: object):  # type: ignore[no-untyped-def]
        return make_engine(model=model, stats=stats, **kw)

    eng = AsyncEngine(EngineConfig(), engine_factory=factory)
    eng.start()
    return eng


async def _collect(eng: AsyncEngine, prompt: list[int], rid: str,
                   params: SamplingParams = GREEDY) -> list[RequestOutput]:
    return [o async for o in eng.generate(prompt, params, rid)]


def test_stream_and_concurrency() -> None:
    eng = _engine()

    async def main() -> None:
        await eng.wait_ready(10)
        prompts = [list(range(1, 1 + n)) for n in (2, 9, 20)]
        results = await asyncio.gather(*(_collect(eng, p, f"r{i}") for i, p in enumerate(prompts)))
        for p, outs in zip(prompts, results):
            assert outs[-1].finished and not any(o.finished for o in outs[:-1])
            toks = [t for o in outs for t in o.outputs[0].token_ids_delta]
            assert toks == outs[-1].outputs[0].token_ids == reference_greedy(p, 12)
            assert "".join(o.outputs[0].text_delta for o in outs) == outs[-1].outputs[0].text

    asyncio.run(main())
    assert eng.ready and eng.info is not None and eng.info.max_model_len == 256 and eng.stats.snapshot().finished == {"length": 3}
    eng.shutdown()


def test_cancellation_aborts_and_frees_blocks() -> None:
    eng = _engine()

    async def main() -> None:
        await eng.wait_ready(10)
        gen = eng.generate(list(range(1, 30)), SamplingParams(max_tokens=200, ignore_eos=True), "long")
        await gen.__anext__()
        await gen.aclose()  # client went away
        engine = eng.engine
        assert engine is not None
        for _ in range(100):
            bm = engine.scheduler.block_manager
            if not engine.has_unfinished() and bm.num_free_blocks == bm.num_blocks:
                break
            await asyncio.sleep(0.02)
        assert engine.scheduler.block_manager.num_free_blocks == engine.runner.num_blocks
        assert eng.stats.snapshot().finished.get("abort") == 1

    asyncio.run(main())
    eng.shutdown()


def test_explicit_abort_ends_the_stream() -> None:
    eng = _engine()

    async def main() -> None:
        await eng.wait_ready(10)
        outs = []
        async for out in eng.generate([1, 2, 3], SamplingParams(max_tokens=200, ignore_eos=True), "x"):
            outs.append(out)
            if len(outs) == 2:
                eng.abort("x")
        assert outs[-1].finished and outs[-1].outputs[0].finish_reason == "abort"

    asyncio.run(main())
    eng.shutdown()


def test_request_errors() -> None:
    eng = _engine(model=FakeModel(fail_on_token=13))

    async def main() -> None:
        await eng.wait_ready(10)
        with pytest.raises(RequestError) as bad:
            await _collect(eng, [1, 13], "bad")
        assert bad.value.status == 500
        with pytest.raises(ContextLengthError) as invalid:  # the engine's own validation, a 400 over HTTP
            await _collect(eng, list(range(300)), "too-long")
        assert invalid.value.max_model_len == 256 and invalid.value.prompt_tokens == 300
        ok = await _collect(eng, [1, 2], "ok")  # the engine carries on
        assert ok[-1].outputs[0].token_ids == reference_greedy([1, 2], 12)

    asyncio.run(main())
    assert not eng.dead
    eng.shutdown()


def test_load_failure_makes_the_engine_dead() -> None:
    def boom(cfg, stats):  # type: ignore[no-untyped-def]
        raise RuntimeError("no weights")

    eng = AsyncEngine(EngineConfig(), engine_factory=boom)
    eng.start()

    async def main() -> None:
        with pytest.raises(EngineDeadError):
            await eng.wait_ready(10)
        with pytest.raises(EngineDeadError):
            await _collect(eng, [1], "r")

    asyncio.run(main())
    assert eng.dead and isinstance(eng.error, RuntimeError) and not eng.ready


def test_thread_death_fails_pending_requests() -> None:
    eng = _engine()

    async def main() -> None:
        await eng.wait_ready(10)
        engine = eng.engine
        assert engine is not None

        def broken_step():  # type: ignore[no-untyped-def]
            raise SystemError("engine bug")

        engine.step = broken_step  # type: ignore[method-assign]
        with pytest.raises(EngineDeadError):
            await _collect(eng, [1, 2], "r")
        assert eng.dead

    asyncio.run(main())


def test_idle_engine_does_not_spin() -> None:
    eng = _engine()

    async def main() -> None:
        await eng.wait_ready(10)
        await _collect(eng, [1, 2], "warm")
        engine = eng.engine
        assert engine is not None
        calls = []
        original = engine.has_unfinished
        engine.has_unfinished = lambda: calls.append(1) or original()  # type: ignore[method-assign]
        await asyncio.sleep(0.3)
        assert len(calls) <= 2  # woken only by new work
        assert eng.num_waiting() == 0

    asyncio.run(main())
    t0 = time.monotonic()
    eng.shutdown()
    assert time.monotonic() - t0 < 5
