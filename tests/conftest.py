"""Shared test setup: deterministic, CPU-only, small thread count (CI has 2 cores)."""
from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

torch.manual_seed(0)
# Triton kernels are tested on CPUs through its interpreter, which triton.jit selects when a function
# is decorated: it must be on before anything (torch's inductor too) first imports triton.language.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Property tests explore the same examples on every run (CI must not flake on a new random draw);
# `--hypothesis-seed` or HYPOTHESIS_PROFILE=explore widens the search locally.
settings.register_profile("repo", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repo"))


def pytest_sessionfinish(session, exitstatus):  # type: ignore[no-untyped-def]
    """A run that collected no tests is a failure, not exit 5 ("no tests")."""
    if exitstatus == 5:
        session.exitstatus = 1
