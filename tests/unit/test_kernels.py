"""Linear kernels vs the fp32 reference `x @ W.dequantize().T`.

Tolerances: fp32 dense paths 1e-5 relative (Frobenius); paths that run in bf16 (int4 kernel, dense bf16,
hybrid) 1e-2 relative — bf16 has an 8-bit mantissa, so rounding x and W costs ~3e-3 on these sizes.
"""
from __future__ import annotations

import functools

import pytest
import torch

from awqserve.layers.linear import DenseKernel, Linear
from awqserve.quant.base import QuantizedTensor
from awqserve.quant.kernels import (cpu_has_native_bf16, HybridKernel, Int4CpuKernel, Int4CudaKernel, KernelPolicy,
                                    PackedBf16Kernel, _scales_and_zeros, cpu_bf16_kernel, int4_group,
                                    make_kernel)
from awqserve.quant.packing import quantize_rtn

BF16_TOL = 1e-2
FP32_TOL = 1e-5
MS = (1, 3, 17, 64)


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.float() - ref).norm() / ref.norm().clamp_min(1e-12))


def make_qt(n: int, k: int, group: int | None, symmetric: bool, seed: int = 0) -> QuantizedTensor:
    torch.manual_seed(seed)
    return quantize_rtn(torch.randn(n, k) * 0.05, group, symmetric)


VARIANTS = {
    "int4": (lambda qt: Int4CpuKernel(qt), BF16_TOL),
    "auto": (lambda qt: make_kernel(qt, "cpu", torch.float32), BF16_TOL),
    "int4-policy": (lambda qt: make_kernel(qt, "cpu", torch.float32, "int4"), BF16_TOL),
    "dense-fp32": (lambda qt: make_kernel(qt, "cpu", torch.float32, KernelPolicy("dense", dense_dtype=torch.float32)),
                   FP32_TOL),
    "dense-bf16": (lambda qt: make_kernel(qt, "cpu", torch.float32, KernelPolicy("dense", dense_dtype=torch.bfloat16)),
                   BF16_TOL),
    "hybrid-fp32-large": (lambda qt: make_kernel(qt, "cpu", torch.float32,
                                                 KernelPolicy("auto", small_m_max=4, dense_dtype=torch.float32)),
                          BF16_TOL),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group", [32, 64, 128, None])
def test_kernel_matches_reference(variant: str, symmetric: bool, group: int | None) -> None:
    build, tol = VARIANTS[variant]
    qt = make_qt(48, 256, group, symmetric)
    kernel = build(qt)
    w = qt.dequantize()
    torch.manual_seed(1)
    x = torch.randn(max(MS), 256)
    for m in MS:
        y = kernel(x[:m])
        assert y.shape == (m, 48) and y.dtype == torch.float32
        err = rel_err(y, x[:m] @ w.t())
        assert err < tol, (variant, m, err)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_zero_rows(variant: str) -> None:
    kernel = VARIANTS[variant][0](make_qt(32, 64, 32, False))
    y = kernel(torch.randn(0, 64))
    assert y.shape == (0, 32) and y.dtype == torch.float32


def test_scales_and_zeros_mapping() -> None:
    """The kernels compute (u - 8) * scale + zero with u = q + 8; zero must be -z * s."""
    qt = make_qt(16, 64, 32, False)
    sz = _scales_and_zeros(qt, 32)
    assert sz.shape == (2, 16, 2)
    u = qt.qweight.float() + 8
    w = ((u - 8).view(16, 2, 32) * sz[..., 0].t().unsqueeze(-1) + sz[..., 1].t().unsqueeze(-1)).view(16, 64)
    torch.testing.assert_close(w, qt.dequantize(), rtol=1e-6, atol=1e-6)


def test_large_groups_split_into_kernel_groups() -> None:
    qt = make_qt(32, 1024, 512, False)
    assert int4_group(qt) == 256
    kernel = make_kernel(qt, "cpu", torch.float32, "int4")
    inner = kernel.large if isinstance(kernel, HybridKernel) else kernel  # q8 one-row kernel in front
    assert isinstance(inner, Int4CpuKernel) and inner.group == 256
    x = torch.randn(5, 1024)
    assert rel_err(kernel(x), x @ qt.dequantize().t()) < BF16_TOL


@pytest.mark.parametrize("n, k, group", [(40, 64, 32), (32, 48, 16), (32, 48, None)])
def test_unsupported_shapes_fall_back_to_dense(n: int, k: int, group: int | None) -> None:
    qt = make_qt(n, k, group, True)
    for policy in ("auto", "int4"):
        kernel = make_kernel(qt, "cpu", torch.float32, policy)
        assert isinstance(kernel, (DenseKernel, PackedBf16Kernel))  # a dequantized float copy
        x = torch.randn(3, k)
        assert rel_err(kernel(x), x @ qt.dequantize().t()) < BF16_TOL


@pytest.mark.parametrize("m", [0, 1, 7, 16, 100])
def test_packed_bf16_kernel_is_bit_identical_to_linear(m: int) -> None:
    w = torch.randn(48, 64, dtype=torch.bfloat16)
    kernel = cpu_bf16_kernel(w)
    x = torch.randn(m, 64, dtype=torch.bfloat16)
    got = kernel(x)
    assert got.shape == (m, 48) and got.dtype == torch.bfloat16
    assert torch.equal(got, torch.nn.functional.linear(x, w))


def test_float_weight_is_dense_in_model_dtype() -> None:
    w = torch.randn(24, 40, dtype=torch.bfloat16)
    kernel = make_kernel(w, "cpu", torch.float32, "dense")
    assert isinstance(kernel, DenseKernel) and kernel.weight.dtype == torch.float32
    x = torch.randn(3, 40)
    assert rel_err(kernel(x), x @ w.float().t()) < FP32_TOL


def test_bf16_stored_float_weight_stays_bf16_where_native() -> None:
    """auto: a weight stored in bf16 runs natively in bf16 on CPUs with bf16 support (no information
    lost, half the bytes); fp32-stored weights stay in the model dtype."""
    w = torch.randn(24, 40, dtype=torch.bfloat16)
    kernel = make_kernel(w, "cpu", torch.float32, "auto")
    expected = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    assert isinstance(kernel, DenseKernel) and kernel.weight.dtype == expected
    assert make_kernel(w.float(), "cpu", torch.float32, "auto").weight.dtype == torch.float32


def test_hybrid_dispatch_by_rows() -> None:
    calls: list[str] = []

    class Tag(DenseKernel):
        def __init__(self, tag: str) -> None:
            super().__init__(torch.eye(4))
            self.tag = tag

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(self.tag)
            return x

    kernel = HybridKernel(Tag("small"), Tag("large"), m_max=8)
    for m in (0, 1, 8, 9, 64):
        kernel(torch.zeros(m, 4))
    assert calls == ["small", "small", "small", "large", "large"]
    auto = make_kernel(make_qt(32, 64, 32, True), "cpu", torch.float32)
    assert isinstance(auto, HybridKernel) and isinstance(auto.small, Int4CpuKernel)


def test_policy_validation_and_factory_with_linear() -> None:
    with pytest.raises(ValueError, match="not a valid WeightLayout"):
        KernelPolicy("fastest")
    parts = [make_qt(32, 64, 32, False, seed=s) for s in range(3)]
    lin = Linear(64, [32, 32, 32], sources=["q_proj", "k_proj", "v_proj"])
    lin.set_weight(parts, None)
    w = QuantizedTensor.concat_out(parts).dequantize()
    lin.build_kernel(functools.partial(make_kernel, policy=KernelPolicy("auto")), torch.device("cpu"), torch.float32)
    x = torch.randn(2, 5, 64)
    y = lin(x)
    assert y.shape == (2, 5, 96)
    assert rel_err(y.reshape(-1, 96), x.reshape(-1, 64) @ w.t()) < BF16_TOL


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("symmetric", [True, False])
def test_cuda_int4_kernel(symmetric: bool) -> None:
    qt = make_qt(256, 512, 128, symmetric)
    kernel = Int4CudaKernel(qt, torch.device("cuda"))
    w = qt.dequantize().cuda()
    for m in (0, 1, 3, 16, 17, 64):
        x = torch.randn(m, 512, device="cuda", dtype=torch.bfloat16)
        y = kernel(x)
        assert y.shape == (m, 256) and y.dtype == torch.bfloat16
        if m:
            assert rel_err(y, x.float() @ w.t()) < BF16_TOL


@pytest.mark.parametrize("layout", ["auto", "int4"])
def test_explicit_float32_is_honoured_by_int4_kernels(layout: str) -> None:
    """`--dtype float32` (compute_dtype): the int4 kernel computes in fp32, so it matches the exact
    dequantized fp32 product far tighter than the bf16 default does."""
    qt = make_qt(64, 128, 32, True)
    x = torch.randn(1, 128)  # one row: the int4 (or q8) kernel on every CPU, never the dense copy
    exact = x @ qt.dequantize(torch.float32).t()
    fp32 = make_kernel(qt, "cpu", torch.float32, KernelPolicy(layout, compute_dtype=torch.float32))
    small = fp32.small if isinstance(fp32, HybridKernel) else fp32
    assert isinstance(small, Int4CpuKernel) and small.compute_dtype == torch.float32
    assert rel_err(fp32(x), exact) < 1e-5
    assert rel_err(make_kernel(qt, "cpu", torch.float32, KernelPolicy(layout))(x), exact) > 1e-4  # bf16 default
