"""The CUDA model path end to end on the CPU: the tiny Qwen3-Next (dummy weights) with Triton W4A16
Linears, fused int4 MoE and Triton paged attention (as `prepare_for_device` selects them on CUDA),
run under the Triton interpreter, against the same weights on the exact float32 torch path."""
from __future__ import annotations

import _triton_interp  # noqa: F401  (must precede the kernel import)
import torch

from _triton_interp import rel_err
from awqserve.attention.triton_backend import TritonPagedAttention
from awqserve.kernels.cuda_paths import prepare_for_device
from awqserve.kernels.w4a16_kernel import TritonW4A16Kernel
from awqserve.layers.attention import Attention
from awqserve.layers.linear import DenseKernel, LinearKernel
from awqserve.layers.moe import SparseMoE
from awqserve.loader.dummy import load_dummy_model
from awqserve.quant.base import QuantizedTensor
from awqserve.quant.kernels import KernelPolicy
from test_dummy_loader import TINY, _forward


def _triton_factory(weight: torch.Tensor | QuantizedTensor, device: torch.device, dtype: torch.dtype) -> LinearKernel:
    if isinstance(weight, QuantizedTensor):
        return TritonW4A16Kernel.from_quantized(weight, device, torch.float32)
    return DenseKernel(weight.to(dtype))


def test_cuda_paths_match_the_cpu_reference() -> None:
    exact = load_dummy_model(TINY, device="cpu", dtype=torch.float32, seed=3,
                             weight_policy=KernelPolicy("dense", dense_dtype=torch.float32))
    fast = load_dummy_model(TINY, device="cpu", dtype=torch.float32, seed=3, kernel_factory=_triton_factory)
    paths = prepare_for_device(fast, torch.device("cuda"))  # selection only: no CUDA call is made
    assert paths.attention_layers == 1 and paths.fused_moe_layers == 3
    assert all(isinstance(m.backend, TritonPagedAttention) for m in fast.modules() if isinstance(m, Attention))
    assert all(m.fused is not None for m in fast.modules() if isinstance(m, SparseMoE))
    ids = list(range(3, 40))
    assert rel_err(_forward(fast, ids), _forward(exact, ids)) < 1e-4


def test_cpu_models_are_left_alone() -> None:
    model = load_dummy_model(TINY, device="cpu", dtype=torch.float32, seed=3)
    assert prepare_for_device(model, torch.device("cpu")).attention_layers == 0
    assert all(m.fused is None for m in model.modules() if isinstance(m, SparseMoE))
