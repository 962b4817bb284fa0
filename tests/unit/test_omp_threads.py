"""One OpenMP team per process: threads beside the engine run torch ops serially (engine/omp_threads.py).

A second team makes libgomp throttle every barrier of the engine's decode step (measured ~25 %
slower over HTTP); these tests check the mechanism in a fresh interpreter, where no other test has
touched the process's thread pools.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from awqserve.engine.omp_threads import serial_torch_here

pytestmark = pytest.mark.skipif("OpenMP" not in torch.__config__.parallel_info(), reason="torch without OpenMP")

_PROBE = textwrap.dedent("""
    import os, threading, torch
    torch.set_num_threads(2)
    from awqserve.engine.omp_threads import serial_torch_here
    x = torch.randn(2000, 2000)
    (x * 2).sum()  # the 'engine' thread: its team exists from here on
    before = len(os.listdir("/proc/self/task"))
    seen = {}
    def aux(guard):
        if guard:
            seen["applied"] = serial_torch_here()
        seen["threads"] = torch.get_num_threads()
        (x * 3).sum()
        seen["tasks"] = len(os.listdir("/proc/self/task")) - before - 1  # minus this thread itself
    t = threading.Thread(target=aux, args=(GUARD,)); t.start(); t.join()
    print(seen["applied"] if GUARD else None, seen["threads"], seen["tasks"], torch.get_num_threads())
""")


def _probe(guard: bool) -> list[str]:
    code = _PROBE.replace("GUARD", str(guard))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.split()


def test_a_guarded_thread_adds_no_openmp_worker_and_leaves_the_engine_threads_alone() -> None:
    applied, threads, extra_tasks, main_threads = _probe(True)
    assert applied == "True" and threads == "1" and extra_tasks == "0" and main_threads == "2"


def test_an_unguarded_thread_would_start_a_second_team() -> None:
    # The control: without the guard the same op gives the thread a worker of its own.
    _, threads, extra_tasks, _ = _probe(False)
    assert threads == "2" and int(extra_tasks) >= 1


def test_grammar_compiler_threads_are_serial() -> None:
    from awqserve.structured.compiler import GrammarCompiler

    compiler = GrammarCompiler(backend=None, max_workers=1)  # type: ignore[arg-type]
    try:
        assert compiler._pool.submit(torch.get_num_threads).result(timeout=30) == 1
    finally:
        compiler.close()


def test_serial_torch_here_is_idempotent_on_the_calling_thread_only() -> None:
    import threading

    result: list[int] = []

    def run() -> None:
        serial_torch_here()
        serial_torch_here()
        result.append(torch.get_num_threads())

    before = torch.get_num_threads()
    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert result == [1] and torch.get_num_threads() == before
