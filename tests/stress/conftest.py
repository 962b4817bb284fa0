"""Stress fixtures: a real server on the demo model with small limits, and the run's size.

Every test in this folder gets the `stress` marker (`pytest -m stress` runs them; `-m "not stress"`
skips them). Sizes: `AWQSERVE_STRESS_SCALE=ci` (default: the whole folder adds a few minutes on 2
cores) or `full` (the issue's sizes; `bench/stress.py` runs them and writes the figures). Traffic goes
to 127.0.0.1 only; every scenario bounds its request count and its wall time.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

HERE = Path(__file__).resolve().parent
for extra in (HERE, HERE.parents[1] / "bench"):  # _server.py here; the load drivers in bench/
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from _server import CAPACITY, MAX_NUM_SEQS, MAX_QUEUED, StressServer  # noqa: E402

SCALE = os.environ.get("AWQSERVE_STRESS_SCALE", "ci")
__all__ = ["CAPACITY", "MAX_NUM_SEQS", "MAX_QUEUED", "StressServer", "scaled"]


def scaled(ci: int | float, full: int | float) -> int | float:
    """The CI size, or the full size when AWQSERVE_STRESS_SCALE=full."""
    return full if SCALE == "full" else ci


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.stress)


@pytest.fixture(scope="session")
def stress_model_dir() -> Path:
    explicit = os.environ.get("AWQSERVE_E2E_MODEL")
    if explicit:
        return Path(explicit)
    from awqserve.tools.demo_model import ensure_demo_model

    return Path(ensure_demo_model())


@pytest.fixture(scope="session")
def stress_server(stress_model_dir: Path) -> Iterator[StressServer]:
    """One shared server for the folder (8 running + 32 queued): `.base_url`, `.proc`, `.log_text()`,
    `.health()`, `.metrics_text()`, `.rss_bytes()`. Tests must leave it idle and healthy."""
    server = StressServer(stress_model_dir).wait_ready()
    yield server
    server.stop()


@pytest.fixture
def start_stress_server(stress_model_dir: Path) -> Iterator[Callable[..., StressServer]]:
    """Factory for a test's own server (`start_stress_server(flags=[...], env={...})`), stopped at teardown."""
    started: list[StressServer] = []

    def start(flags: list[str] | None = None, env: dict[str, str] | None = None) -> StressServer:
        server = StressServer(stress_model_dir, flags, env)
        started.append(server)
        return server.wait_ready()

    yield start
    for server in started:
        server.stop()
