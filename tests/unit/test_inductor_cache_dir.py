"""Inductor's compiled kernels land under $XDG_CACHE_HOME/awqserve/inductor (a defect: they went to
/tmp/torchinductor_root because the default was set after inductor had exported its own)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROBE = ("import awqserve.compile.compiled_decode\n"
         "from torch._inductor.runtime.cache_dir_utils import cache_dir\n"
         "print(cache_dir())")


def _probe(env: dict[str, str]) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                         timeout=120, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_inductor_cache_follows_xdg_cache_home(tmp_path: Path) -> None:
    assert _probe({"XDG_CACHE_HOME": str(tmp_path)}) == str(tmp_path / "awqserve" / "inductor")


def test_an_explicit_inductor_cache_dir_wins(tmp_path: Path) -> None:
    assert _probe({"XDG_CACHE_HOME": str(tmp_path), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "mine")}) == \
        str(tmp_path / "mine")
