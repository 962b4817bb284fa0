"""Compile (once, cached) and load the CPU kernels: q8gemv.c (plain C, AVX2) + q8_ops.cpp (torch ops).

Built by `scripts/setup.sh` (install time: about 8 s on 2 cores, most of it torch's headers) and,
failing that, on first use. Cached under `$XDG_CACHE_HOME/awqserve/kernels/`, named by a hash of the
sources, flags and torch version, so an edited source or another torch never loads a stale build.
The build writes a temporary file renamed into place, so concurrent builders never see half a
library. OpenMP: the library links `libgomp.so.1`, the runtime torch has already loaded (one
thread pool in the process, not two competing ones).

Invariants: `load()` returns False (never raises) when the CPU lacks AVX2/FMA, no compiler is found,
the build fails, or `AWQSERVE_CPU_Q8=0`; callers then keep PyTorch's kernels. The reason is kept in
`unavailable_reason()` for logs and tests. After `load()` returned True, `torch.ops.awqserve.q8_w4_mm`
and `q8_w8_mm` exist.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

C_SOURCE = Path(__file__).with_name("q8gemv.c")
ATTN_SOURCE = Path(__file__).with_name("decode_attn.c")
CPP_SOURCE = Path(__file__).with_name("q8_ops.cpp")
HEADER = Path(__file__).with_name("avx2_util.h")
CFLAGS = ("-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-fPIC", "-std=c11")
CXXFLAGS = ("-O2", "-std=c++20", "-fPIC", "-shared", "-fopenmp", "-w")
_reason: list[str] = []


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="ignore")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "awqserve" / "kernels"


def library_path() -> Path:
    import torch

    key = (C_SOURCE.read_bytes() + ATTN_SOURCE.read_bytes() + HEADER.read_bytes() + CPP_SOURCE.read_bytes()
           + " ".join(CFLAGS + CXXFLAGS).encode())
    digest = hashlib.sha256(key + torch.__version__.encode()).hexdigest()[:16]
    return cache_dir() / f"q8ops-{digest}.so"


def _compilers() -> tuple[str, str]:
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if cc is None or cxx is None:
        raise RuntimeError("no C/C++ compiler (gcc, g++) found")
    return cc, cxx


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(cmd[0]).name} failed: {proc.stderr.strip()[-400:]}")


def build(force: bool = False) -> Path:
    """Compile the library into the cache (atomically: temporary files renamed into place)."""
    import torch

    out = library_path()
    if out.exists() and not force:
        return out
    cc, cxx = _compilers()
    torch_dir = Path(torch.__file__).parent
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        obj, attn, lib = Path(tmp) / "q8gemv.o", Path(tmp) / "decode_attn.o", Path(tmp) / "q8ops.so"
        _run([cc, *CFLAGS, "-c", str(C_SOURCE), "-o", str(obj)])
        _run([cc, *CFLAGS, "-c", str(ATTN_SOURCE), "-o", str(attn)])
        _run([cxx, *CXXFLAGS, f"-I{torch_dir / 'include'}", str(CPP_SOURCE), str(obj), str(attn), "-o", str(lib),
              f"-L{torch_dir / 'lib'}", "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{torch_dir / 'lib'}"])
        os.replace(lib, out)
    return out


@functools.lru_cache(maxsize=1)
def load() -> bool:
    """Whether the ops are loaded (building them first if needed); the reason is logged once if not."""
    _reason.clear()
    if os.environ.get("AWQSERVE_CPU_Q8", "1") == "0":
        _reason.append("disabled by AWQSERVE_CPU_Q8=0")
        return False
    missing = {"avx2", "fma", "f16c"} - cpu_flags()
    if missing:
        _reason.append(f"CPU lacks {sorted(missing)}")
        return False
    try:
        import torch

        torch.ops.load_library(str(build()))  # type: ignore[no-untyped-call]
        log.info("CPU q8 kernels loaded (%s)", library_path().name)
        return True
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        _reason.append(str(e))
        log.warning("CPU int8-activation kernels unavailable (%s); using PyTorch's kernels", e)
        return False


def unavailable_reason() -> str | None:
    """Why `load()` returned None, or None if it loaded (or was not tried)."""
    return _reason[0] if _reason else None


if __name__ == "__main__":  # `python -m awqserve.kernels.cpu.build`: build at install time
    print(f"CPU q8 kernels: {library_path()}" if load() else f"CPU q8 kernels: not built ({unavailable_reason()})")
