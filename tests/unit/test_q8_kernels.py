"""The CPU q8 kernels (kernels/cpu): int4 / int8 weights times int8-rounded activations.

Reference: the float product of the dequantized weight with the activations rounded exactly as
the kernel rounds them (blocks of 64, scale max|x|/127) — equal up to float summation order — and
the plain float product within the rounding error of int8 activations."""
from __future__ import annotations

import pytest
import torch

from awqserve.kernels.cpu import build
from awqserve.kernels.cpu.q8_kernels import (BLOCK, Q8Int4Kernel, Q8Int8RowKernel, available, pack_int4,
                                             supports)
from awqserve.quant.kernels import HybridKernel, logits_kernel, make_kernel, q8_head_max_m, q8_int4_max_m
from awqserve.config.engine_config import LmHeadPrecision
from awqserve.layers.linear import DenseKernel
from awqserve.quant.packing import quantize_rtn

pytestmark = pytest.mark.skipif(not available(), reason=f"q8 kernels unavailable: {build.unavailable_reason()}")


def rounded(x: torch.Tensor) -> torch.Tensor:
    """x with each block of 64 rounded to int8 levels of max|x|/127 (what the kernels multiply)."""
    m, k = x.shape
    xb = x.view(m, k // BLOCK, BLOCK)
    d = xb.abs().amax(-1, keepdim=True) / 127
    return (torch.round(xb / torch.where(d > 0, d, torch.ones_like(d))) * d).view(m, k)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group", [64, 128, 192, 384])
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 9, 17])
def test_int4_matches_rounded_reference(symmetric: bool, group: int, m: int) -> None:
    torch.manual_seed(group + m)
    qt = quantize_rtn(torch.randn(80, 384) * 0.05, group, symmetric=symmetric)
    kernel = Q8Int4Kernel(qt)
    x = torch.randn(m, 384) * 3
    w = qt.dequantize()
    y = kernel(x)
    assert y.shape == (m, 80) and y.dtype == torch.float32
    assert rel(y, rounded(x) @ w.t()) < 1e-5
    assert rel(y, x @ w.t()) < 2e-2  # int8 activation rounding: ~0.5 % here


def test_int4_layout_and_edge_rows() -> None:
    qt = quantize_rtn(torch.randn(16, 128) * 0.05, 64, symmetric=False)
    w4, scale, bias = pack_int4(qt)
    u = qt.qweight.to(torch.int16) + 8
    assert w4.shape == (16, 64) and torch.equal((w4[:, :32] & 0xF).to(torch.int16), u[:, :32])
    assert torch.equal((w4[:, :32] >> 4).to(torch.int16), u[:, 32:64])
    torch.testing.assert_close(-(8 + qt.zeros.float()) * qt.scales, bias)  # type: ignore[union-attr]
    kernel = Q8Int4Kernel(qt)
    assert kernel(torch.randn(0, 128)).shape == (0, 16)
    assert torch.equal(kernel(torch.zeros(2, 128)), torch.zeros(2, 16))  # all-zero blocks: scale 0


def test_supports_and_refuses() -> None:
    assert supports(quantize_rtn(torch.randn(16, 128), 64, symmetric=True))
    assert not supports(quantize_rtn(torch.randn(16, 96), 32, symmetric=True))
    with pytest.raises(ValueError, match="cannot take"):
        Q8Int4Kernel(quantize_rtn(torch.randn(16, 96), 32, symmetric=True))


@pytest.mark.parametrize("m", [1, 4, 8, 11])
def test_int8_rows(m: int) -> None:
    torch.manual_seed(m)
    w = torch.randn(300, 192) * 0.02
    kernel = Q8Int8RowKernel(w)
    x = torch.randn(m, 192)
    wq = kernel.w8.float() * kernel.rscale[:, None]
    assert rel(kernel(x), rounded(x) @ wq.t()) < 1e-5
    assert rel(kernel(x), x @ w.t()) < 2e-2


def test_kernel_choice_on_cpu() -> None:
    """make_kernel puts the q8 kernel in front (one row where bf16 is native, <= 128 rows on AVX2);
    logits_kernel uses it for the head of a quantized checkpoint."""
    qt = quantize_rtn(torch.randn(64, 128) * 0.05, 64, symmetric=True)
    k = make_kernel(qt, "cpu", torch.float32)
    assert isinstance(k, HybridKernel) and isinstance(k.small, Q8Int4Kernel) and k.m_max == q8_int4_max_m()
    x = torch.randn(3, 128)
    assert rel(k(x), x @ qt.dequantize().t()) < 2e-2 and rel(k(x[:1]), x[:1] @ qt.dequantize().t()) < 2e-2
    head = logits_kernel(DenseKernel(torch.randn(500, 128)), torch.device("cpu"), LmHeadPrecision.AUTO, quantized=True)
    assert isinstance(head, HybridKernel) and isinstance(head.small, Q8Int8RowKernel) and head.m_max == q8_head_max_m()
    float_ckpt = logits_kernel(DenseKernel(torch.randn(500, 128)), torch.device("cpu"), LmHeadPrecision.AUTO)
    assert not isinstance(float_ckpt, HybridKernel) or not isinstance(float_ckpt.small, Q8Int8RowKernel)
    assert logits_kernel(DenseKernel(torch.randn(5, 128)), torch.device("cpu"), LmHeadPrecision.FLOAT).__class__ is DenseKernel


def test_inside_compiled_graph() -> None:
    """The ops have shape functions: a torch.compile graph calls them as extern kernels."""
    qt = quantize_rtn(torch.randn(64, 128) * 0.05, 64, symmetric=False)
    k4, k8 = Q8Int4Kernel(qt), Q8Int8RowKernel(torch.randn(32, 64))
    fn = torch.compile(lambda x: k8(torch.relu(k4(x))), fullgraph=True)
    x = torch.randn(2, 128)
    torch.testing.assert_close(fn(x), k8(torch.relu(k4(x))))


def test_disabled_by_env(monkeypatch: pytest.MonkeyPatch) -> None:
    build.load.cache_clear()
    monkeypatch.setenv("AWQSERVE_CPU_Q8", "0")
    try:
        assert build.load() is False and "AWQSERVE_CPU_Q8=0" in (build.unavailable_reason() or "")
    finally:
        monkeypatch.delenv("AWQSERVE_CPU_Q8")
        build.load.cache_clear()
        assert build.load() is True
