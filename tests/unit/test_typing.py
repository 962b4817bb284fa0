"""The engine and the HTTP layer type-check strictly, and the test fake matches the engine protocol.

`mypy --strict` over awqserve/engine and awqserve/entrypoints (settings in pyproject.toml: the offline
tools are followed silently) plus tests/unit/fake_engine.py, whose `_CHECK` assignment fails to
type-check the moment FakeAsyncEngine stops implementing `EngineClient`.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_mypy_strict_is_clean() -> None:
    if shutil.which("mypy", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("mypy is not installed (pip install -e .[test])")
    cmd = [sys.executable, "-m", "mypy", "--strict", "awqserve/engine", "awqserve/entrypoints",
           "tests/unit/fake_engine.py"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
