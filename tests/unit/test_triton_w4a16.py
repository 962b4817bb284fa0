"""Triton W4A16 GEMM / split-K GEMV vs the torch reference (interpreter on CPU, small shapes).

Bounds: float32 activations 1e-5 (the interpreter's dot is exact float32; on a GPU tf32 is ~3e-4 and
the device script checks that), bf16 activations 1e-2 (operands rounded to 8-bit mantissas).
"""
from __future__ import annotations

import _triton_interp  # noqa: F401  (must precede the kernel import)
import pytest
import torch

from _triton_interp import rel_err
from awqserve.kernels.triton.w4a16 import w4a16_matmul
from awqserve.kernels.w4a16_layout import (W4A16Weight, dequantize, from_quantized, pack_nibbles_k, reference_matmul,
                                           supports, unpack_nibbles_k)
from awqserve.quant.packing import quantize_rtn

N, K = 72, 256  # N not a multiple of the 64-wide column tile: the edge mask is exercised


def _weight(group: int, symmetric: bool, dtype: torch.dtype = torch.float32, n: int = N, k: int = K,
            seed: int = 0) -> W4A16Weight:
    torch.manual_seed(seed)
    return from_quantized(quantize_rtn(torch.randn(n, k) * 0.05, group, symmetric), dtype)


def test_pack_roundtrip_and_dequantize_match_canonical() -> None:
    u = torch.randint(0, 16, (24, 64), dtype=torch.int32)
    assert torch.equal(unpack_nibbles_k(pack_nibbles_k(u)).to(torch.int32), u)
    qt = quantize_rtn(torch.randn(24, 64), 32, False)
    assert torch.equal(dequantize(from_quantized(qt, torch.float32)), qt.dequantize())
    assert from_quantized(qt).shape == (24, 64)


def test_supports_only_kernel_groups() -> None:
    assert supports(quantize_rtn(torch.randn(8, 256), 128, True))
    assert not supports(quantize_rtn(torch.randn(8, 256), None, True))  # channel-wise: G = K = 256


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group", [32, 64, 128])
@pytest.mark.parametrize("m", [1, 7, 16, 17, 48])
def test_matmul_matches_reference(group: int, symmetric: bool, m: int) -> None:
    w = _weight(group, symmetric)
    x = torch.randn(m, K)
    y = w4a16_matmul(x, w)
    assert y.shape == (m, N) and y.dtype == torch.float32
    assert rel_err(y, reference_matmul(x, w)) < 1e-5


@pytest.mark.parametrize("split_k", [1, 2, 4])
def test_split_k_slices_agree(split_k: int) -> None:
    w = _weight(64, False)
    x = torch.randn(3, K)
    assert rel_err(w4a16_matmul(x, w, split_k=split_k), reference_matmul(x, w)) < 1e-5


@pytest.mark.parametrize("m", [3, 40])
def test_word_loads_without_expansion(m: int) -> None:
    w = _weight(32, False)
    x = torch.randn(m, K)
    assert rel_err(w4a16_matmul(x, w, expand_words=False), reference_matmul(x, w)) < 1e-5


@pytest.mark.parametrize("m", [2, 33])
def test_bf16_activations(m: int) -> None:
    w = _weight(128, True, torch.bfloat16)
    x = torch.randn(m, K).to(torch.bfloat16)
    y = w4a16_matmul(x, w)
    assert y.dtype == torch.bfloat16
    assert rel_err(y, reference_matmul(x, w)) < 1e-2


def test_empty_batch_and_shape_errors() -> None:
    w = _weight(32, True)
    assert w4a16_matmul(torch.randn(0, K), w).shape == (0, N)
    with pytest.raises(ValueError):
        w4a16_matmul(torch.randn(1, K + 8), w)
