"""`TritonW4A16Kernel`: the CUDA Linear kernel for int4 weights (one int4 copy, Triton matmuls).

Holds a `W4A16Weight` as buffers and calls `kernels.triton.w4a16.w4a16_matmul` (split-K GEMV for
decode batches, tiled GEMM above). Triton is imported on the first forward, so building the kernel
(and the dummy loader's meta-device accounting) needs only torch. `triton_available()` is the one
place that decides whether a CUDA model can use the Triton paths at all.
"""
from __future__ import annotations

import functools
import importlib.util

import torch

from awqserve.kernels.w4a16_layout import W4A16Weight, from_quantized, supports
from awqserve.layers.linear import LinearKernel
from awqserve.quant.base import QuantizedTensor


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """Whether the `triton` package is importable (the runtime install may lack it)."""
    return importlib.util.find_spec("triton") is not None


class TritonW4A16Kernel(LinearKernel):
    """forward(x [M, K]) -> [M, N] in x's dtype; weights stay int4 (0.5 B/weight + group scales)."""

    qweight: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None

    def __init__(self, weight: W4A16Weight) -> None:
        super().__init__()
        self.group_size = weight.group_size
        self.out_features, self.in_features = weight.shape
        self.register_buffer("qweight", weight.qweight, persistent=False)
        self.register_buffer("scales", weight.scales, persistent=False)
        self.register_buffer("zeros", weight.zeros, persistent=False)

    @staticmethod
    def from_quantized(qt: QuantizedTensor, device: torch.device, dtype: torch.dtype) -> "TritonW4A16Kernel":
        """Repack once at load; raises ValueError for shapes the kernels do not take."""
        if not supports(qt):
            raise ValueError(f"Triton W4A16 kernel cannot take weight {qt.shape} group {qt.group_size}")
        return TritonW4A16Kernel(from_quantized(qt, dtype, device))

    @property
    def weight(self) -> W4A16Weight:
        return W4A16Weight(self.qweight, self.scales, self.zeros, self.group_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from awqserve.kernels.triton.w4a16 import w4a16_matmul

        out: torch.Tensor = w4a16_matmul(x.to(self.scales.dtype), self.weight).to(x.dtype)
        return out

    def extra_repr(self) -> str:
        zp = "asym" if self.zeros is not None else "sym"
        return f"in={self.in_features}, out={self.out_features}, group={self.group_size}, {zp}"
