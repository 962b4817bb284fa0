"""`in_daemon_thread` delivers the worker's result or its own exception to the awaiting coroutine."""
from __future__ import annotations

import asyncio

import pytest

from awqserve.entrypoints.openai.state import in_daemon_thread


def _boom() -> None:
    raise RuntimeError("model failed to load: disk on fire")


def test_result_is_delivered() -> None:
    assert asyncio.run(in_daemon_thread(lambda a, b: a + b, 2, 3)) == 5


def test_exception_is_the_workers_own() -> None:
    """The original exception, not a NameError from a lambda that outlived its `except` block."""
    with pytest.raises(RuntimeError, match="disk on fire"):  # wait_for: a regression fails, never hangs
        asyncio.run(asyncio.wait_for(in_daemon_thread(_boom), timeout=10))
