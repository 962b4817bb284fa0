"""Keep one OpenMP thread team per process: the engine thread's.

Why: libgomp counts every thread it manages. Once that count exceeds the CPUs the process may run
on, it "throttles" every barrier and idle worker to ~100 spins before sleeping on a futex, so each
of the ~350 parallel regions of a decode step pays a futex wake-up. A single torch op big enough to
run in parallel (e.g. a 49,152-element `torch.zeros` for a grammar bitmask) on any second thread
(the HTTP loop, the grammar compiler) gives that thread a team of its own for its lifetime, and the
server's decode then ran ~25 % slower than the same engine offline (measured: 86 vs 114 tok/s on a
2-core machine; docs/benchmarks/http-path-2026-12-07.md).

`serial_torch_here()` makes the calling (non-engine) thread run torch's CPU ops on itself only: it
sets that thread's own OpenMP `nthreads` ICV to 1 (torch's `set_num_threads` would change the
process-wide default instead, i.e. the engine's too). A no-op where torch does not use libgomp.
"""
from __future__ import annotations

import ctypes
import os

import torch


def _libgomp() -> ctypes.CDLL | None:
    try:
        # The soname torch's own copy carries: dlopen returns the copy already loaded with torch.
        return ctypes.CDLL("libgomp.so.1", mode=getattr(os, "RTLD_NOLOAD", 4) | os.RTLD_GLOBAL)
    except (OSError, AttributeError):
        return None


def serial_torch_here() -> bool:
    """Run torch CPU ops on the calling thread without an OpenMP team. Returns whether it applied.

    Must be called on the thread it is meant for, before that thread's first parallel op: torch's
    per-thread lazy initialisation (`at::get_num_threads`) runs first so it cannot undo this later.
    """
    gomp = _libgomp()
    if gomp is None or "OpenMP" not in torch.__config__.parallel_info():
        return False
    torch.get_num_threads()  # torch's per-thread init: sets this thread's ICV to the global default
    gomp.omp_set_num_threads(ctypes.c_int(1))
    return torch.get_num_threads() == 1
