"""Start-up progress: the LoadProgress state machine, its renderers, and the callbacks that feed it
(checkpoint bytes and shards, engine phases, AsyncEngine, the /health body while loading)."""
from __future__ import annotations

import io
import logging
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from awqserve.engine.progress import PHASES, LoadProgress, ProgressSnapshot, estimate_eta
from awqserve.engine.progress_render import (LogRenderer, TerminalRenderer, console_progress, describe,
                                             format_amount, format_duration)
from awqserve.loader.checkpoint import CheckpointReader


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Recorder:
    def __init__(self) -> None:
        self.snaps: list[ProgressSnapshot] = []

    def on_progress(self, snap: ProgressSnapshot) -> None:
        self.snaps.append(snap)


# -- the state machine --------------------------------------------------------------------------
def test_phases_only_move_forward_and_may_skip() -> None:
    p = LoadProgress()
    assert p.snapshot().phase == "starting"
    p.begin("loading_weights", unit="bytes")
    p.begin("compiling")  # allocating_cache skipped
    with pytest.raises(ValueError, match="cannot follow"):
        p.begin("loading_weights")
    with pytest.raises(ValueError):
        p.begin("no_such_phase")
    p.ready()
    p.begin("compiling")  # after the end nothing changes (and nothing raises)
    p.update(5, 10)
    assert p.phases_seen == ["starting", "loading_weights", "compiling", "ready"]
    snap = p.snapshot()
    assert snap.phase == "ready" and snap.fraction == 1.0 and snap.finished


def test_fraction_is_clamped_and_never_decreases() -> None:
    p = LoadProgress()
    p.begin("loading_weights", unit="bytes")
    assert p.snapshot().fraction == 0.0  # no total yet
    p.update(5, 10, "shard 1/2")
    assert p.snapshot().fraction == 0.5 and p.snapshot().detail == "shard 1/2"
    p.update(3)  # late and smaller: kept at 5
    assert p.snapshot().done == 5 and p.snapshot().fraction == 0.5
    p.update(12)
    assert p.snapshot().fraction == 1.0
    p.begin("allocating_cache")
    snap = p.snapshot()
    assert (snap.done, snap.total, snap.fraction, snap.detail) == (0.0, None, 0.0, "")


def test_eta_from_the_phase_rate() -> None:
    clock = Clock()
    p = LoadProgress(clock=clock)
    clock.t = 100.0
    p.begin("compiling", unit="graphs")
    clock.t = 110.0
    p.update(1, 4)
    snap = p.snapshot()
    assert snap.phase_elapsed_s == 10.0 and snap.eta_s == pytest.approx(30.0)
    assert estimate_eta(0, 4, 10) is None and estimate_eta(1, None, 10) is None


def test_fail_ends_any_phase() -> None:
    rec = Recorder()
    p = LoadProgress([rec])
    p.begin("loading_weights")
    p.fail("ModelLoadError: boom")
    p.ready()  # no-op after failure
    assert p.snapshot().phase == "failed" and p.snapshot().detail == "ModelLoadError: boom"
    assert [s.phase for s in rec.snaps] == ["loading_weights", "failed"]


def test_as_dict_is_the_health_shape() -> None:
    p = LoadProgress()
    p.begin("loading_weights", unit="bytes")
    assert p.snapshot().as_dict() == {"phase": "loading_weights", "progress": 0.0, "phase_elapsed_s": 0.0,
                                      "eta_s": None}
    p.update(1 << 20, 4 << 20, "shard 1/9")
    d = p.snapshot().as_dict()
    assert d["progress"] == 0.25 and d["unit"] == "bytes" and d["total"] == 4 << 20 and d["detail"] == "shard 1/9"


def test_listeners_are_throttled_but_see_every_phase() -> None:
    clock, rec = Clock(), Recorder()
    p = LoadProgress([rec], notify_interval=1.0, clock=clock)
    p.begin("loading_weights")
    for i in range(1, 50):
        p.update(i, 100)  # same instant: throttled
    clock.t = 2.0
    p.update(60, 100)
    p.begin("compiling")
    p.ready()
    assert [s.phase for s in rec.snaps] == ["loading_weights", "loading_weights", "compiling", "ready"]
    assert rec.snaps[1].done == 60


def test_a_broken_listener_is_dropped_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def on_progress(self, snap: ProgressSnapshot) -> None:
            raise OSError("terminal gone")

    rec = Recorder()
    p = LoadProgress([Broken(), rec])
    p.begin("loading_weights")
    p.ready()
    assert [s.phase for s in rec.snaps] == ["loading_weights", "ready"]
    assert "progress listener" in caplog.text


def test_thread_safe_updates_arrive_in_order() -> None:
    rec = Recorder()
    p = LoadProgress([rec], notify_interval=0.0)
    p.begin("loading_weights", unit="bytes")

    def worker(k: int) -> None:
        for i in range(500):
            p.update(i * 8 + k, 4000)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seqs = [s.seq for s in rec.snaps]
    fractions = [s.fraction for s in rec.snaps]
    assert seqs == sorted(seqs) and fractions == sorted(fractions)
    assert p.snapshot().done == 499 * 8 + 7


# -- renderers ----------------------------------------------------------------------------------
def test_formatting() -> None:
    assert format_duration(5) == "5s" and format_duration(65) == "1m05s" and format_duration(7380) == "2h03m"
    assert format_amount(19.1 * 2**30, 45 * 2**30, "bytes") == "19.1 of 45.0 GiB"
    assert format_amount(3, 30, "steps") == "3/30 steps" and format_amount(3, None, "steps") == ""
    snap = ProgressSnapshot("loading_weights", 0.42, 19.1 * 2**30, 45 * 2**30, "bytes", "shard 3/9", 10, 65, 1)
    assert describe(snap) == "loading weights: 42% (19.1 of 45.0 GiB, shard 3/9), about 1m05s left"


def test_log_renderer_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="awqserve.progress")
    p = LoadProgress([LogRenderer(interval=3600)], notify_interval=0.0)
    p.begin("loading_weights", unit="bytes")
    for i in range(1, 10):
        p.update(i, 10, f"shard {i}/10")  # within the interval: no line each
    p.begin("compiling", unit="graphs")
    p.ready()
    lines = [r.getMessage() for r in caplog.records if r.name == "awqserve.progress"]
    assert len(lines) == 3, lines
    assert lines[0].startswith("start-up: loading weights") and "compiling decode step" in lines[1]
    assert lines[2].startswith("start-up: ready after")


def test_terminal_renderer_draws_bars_and_restores_logging() -> None:
    out = io.StringIO()
    handlers_before = list(logging.getLogger().handlers)
    p = LoadProgress([TerminalRenderer(out)], notify_interval=0.0)
    p.begin("loading_weights", unit="bytes")
    p.update(50 << 20, 100 << 20, "shard 1/2")
    p.update(100 << 20, 100 << 20, "shard 2/2")
    p.begin("allocating_cache")
    p.begin("compiling", unit="graphs")
    p.update(1, 2, "batch 2-8")
    p.ready()
    text = out.getvalue()
    assert "loading weights" in text and "100M/100M" in text and "shard 2/2" in text
    assert "allocating KV cache" in text and "compiling decode step" in text and "2/2" in text
    assert logging.getLogger().handlers == handlers_before


def test_console_progress_chooses_by_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(console_progress(io.StringIO())._listeners[0], LogRenderer)
    assert isinstance(console_progress(Tty())._listeners[0], TerminalRenderer)


# -- what feeds it ------------------------------------------------------------------------------
def test_checkpoint_reader_reports_bytes_and_shards(tmp_path: Path) -> None:
    a, b = torch.zeros(256, dtype=torch.float32), torch.zeros(64, dtype=torch.bfloat16)
    save_file({"a": a}, str(tmp_path / "one.safetensors"))
    save_file({"b": b}, str(tmp_path / "two.safetensors"))
    calls: list[tuple[float, float, str]] = []
    reader = CheckpointReader(tmp_path, on_read=lambda d, t, s: calls.append((d, t, s)))
    assert reader.total_bytes == 256 * 4 + 64 * 2
    reader.get("a")
    reader.get("a")  # a second read of the same tensor does not count twice
    reader.get("b")
    assert calls == [(1024, 1152, "shard 1/2"), (1152, 1152, "shard 2/2")]


def test_build_engine_walks_the_phases() -> None:
    from _engine_fakes import ByteTokenizer, FakeModel
    from awqserve.config.engine_config import EngineConfig
    from awqserve.engine.llm_engine import LLMEngine

    rec = Recorder()
    p = LoadProgress([rec])
    config = EngineConfig(device="cpu", block_size=4, max_model_len=64, kv_cache_memory=1 << 20)
    LLMEngine.from_config(config, model=FakeModel(), tokenizer=ByteTokenizer(), progress=p)  # type: ignore[arg-type]
    assert p.phases_seen == ["starting", "allocating_cache", "ready"]
    assert [PHASES.index(s.phase) for s in rec.snaps] == sorted(PHASES.index(s.phase) for s in rec.snaps)


def test_async_engine_reports_ready_and_failure() -> None:
    import time

    from _engine_fakes import make_engine
    from awqserve.config.engine_config import EngineConfig
    from awqserve.engine.async_engine import AsyncEngine

    def boom(cfg: EngineConfig, stats: object) -> object:
        raise RuntimeError("no weights")

    ok = AsyncEngine(EngineConfig(), engine_factory=lambda cfg, stats: make_engine(stats=stats))
    bad = AsyncEngine(EngineConfig(), engine_factory=boom)  # type: ignore[arg-type]
    assert ok.progress.phase == "starting"
    ok.start()
    bad.start()
    deadline = time.monotonic() + 10
    while not (ok.ready and bad.dead) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ok.progress.phase == "ready" and ok.progress.fraction == 1.0
    assert bad.progress.phase == "failed" and "no weights" in bad.progress.detail
    ok.shutdown()


def test_health_while_loading_names_the_phase() -> None:
    from server_harness import run_server

    with run_server(wait_ready=False, load_delay=1.5) as s, s.client() as c:
        body = c.get("/health").json()
        assert body["status"] == "loading" and body["phase"] in ("starting", "loading_weights")
        assert body["progress"] == 0.0
