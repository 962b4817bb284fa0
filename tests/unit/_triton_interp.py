"""Shared set-up of the Triton interpreter tests (CPU): import this before any kernel module.

- Sets `TRITON_INTERPRET=1` when no GPU is present (the jit decorator reads it at import time).
- Skips the calling test module when Triton is missing, except in CI (`CI` set), where the `test`
  extra installs it and a missing Triton must fail loudly.
- Works around Triton 3.6's interpreter with numpy >= 2.3: it turns a scalar kernel value into a
  Python int (`range(0, n)` over a runtime `n`) with `int(array)`, which numpy now refuses for a
  1-element array; the patched conversion reads the element instead.
"""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

try:
    import triton  # noqa: F401
except ImportError:  # pragma: no cover - depends on the install
    if os.environ.get("CI"):
        raise
    pytest.skip("triton is not installed (pip install -e '.[test]')", allow_module_level=True)

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def _patch_scalar_index() -> None:
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor
    if getattr(original, "_awqserve_patched", False):
        return

    def patched(tensor, scope):  # type: ignore[no-untyped-def]
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched._awqserve_patched = True  # type: ignore[attr-defined]
    interpreter._patch_lang_tensor = patched


if INTERPRETED:
    _patch_scalar_index()


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    """‖y − ref‖ / ‖ref‖ in float32 (NaN anywhere gives NaN, which fails every bound)."""
    y32, r32 = y.float(), ref.float()
    return float((y32 - r32).norm() / r32.norm().clamp_min(1e-12))
