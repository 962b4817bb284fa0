"""Shared test setup: deterministic, CPU-only, small thread count (CI has 2 cores)."""
from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

torch.manual_seed(0)


def pytest_sessionfinish(session, exitstatus):  # type: ignore[no-untyped-def]
    """A run that collected no tests is a failure, not exit 5 ("no tests")."""
    if exitstatus == 5:
        session.exitstatus = 1
