"""Linear kernels on the C library of q8gemv.c: int4 and int8 weights times int8-quantized activations.

`Q8Int4Kernel` holds one 0.5-byte copy of an int4 weight (plus float32 scale and bias per group) and
`Q8Int8RowKernel` an int8 per-row copy of a float weight (the logits projection). Both quantize the
activations to int8 blocks of 64 on each call (llama.cpp's scheme for its Q4/Q8 dot products) and
stream the weight once per call, so they are meant for few rows: decode steps and short prefills.
Numerics: the activation rounding (per block of 64) is the only difference to the dequantized float product (relative
error ~1e-3 per output, tested against `QuantizedTensor.dequantize`).

Both run as the C++ operators `awqserve::q8_w4_mm` / `awqserve::q8_w8_mm` (kernels/cpu/q8_ops.cpp):
eager code and inductor's compiled graphs call them like any ATen op. Use `available()` before
building one: it loads the library (building it if needed) and registers the ops' shape functions.
"""
from __future__ import annotations

import torch

from awqserve.kernels.cpu.build import load
from awqserve.layers.linear import LinearKernel
from awqserve.quant.base import QuantizedTensor

BLOCK = 64


def supports(qt: QuantizedTensor) -> bool:
    """Whether the int4 kernel takes this weight's shape and grouping."""
    k = qt.shape[1]
    return k % BLOCK == 0 and qt.group_size % BLOCK == 0 and k % qt.group_size == 0


def pack_int4(qt: QuantizedTensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(w4 uint8 [N, K/2], scale float32 [N, K/G], bias float32 [N, K/G]) in q8gemv.c's layout."""
    n, k = qt.shape
    u = (qt.qweight.to(torch.int16) + 8).to(torch.uint8).view(n, k // BLOCK, 2, BLOCK // 2)  # halves of a block
    w4 = (u[:, :, 0] | (u[:, :, 1] << 4)).reshape(n, k // 2).contiguous()
    scale = qt.scales.to(torch.float32).contiguous()
    zero = torch.zeros_like(scale) if qt.zeros is None else qt.zeros.to(torch.float32)
    bias = (-(8.0 + zero) * scale).contiguous()
    return w4, scale, bias


def quantize_rows_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 [N, K], float32 scale [N]): symmetric, one scale per output row."""
    w = weight.float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp_min(torch.finfo(torch.float32).tiny)
    return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8).contiguous(), scale.contiguous()


def _register_fakes() -> None:
    """Shape functions for torch.compile (the ops come from the C++ library)."""

    @torch.library.register_fake("awqserve::q8_w4_mm")  # type: ignore[untyped-decorator]
    def _(x: torch.Tensor, w4: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, group: int) -> torch.Tensor:
        return x.new_empty((x.shape[0], w4.shape[0]), dtype=torch.float32)

    @torch.library.register_fake("awqserve::q8_w8_mm")  # type: ignore[untyped-decorator]
    def _(x: torch.Tensor, w8: torch.Tensor, rscale: torch.Tensor) -> torch.Tensor:
        return x.new_empty((x.shape[0], w8.shape[0]), dtype=torch.float32)

    @torch.library.register_fake("awqserve::decode_attn")  # type: ignore[untyped-decorator]
    def _(q: torch.Tensor, kv_cache: torch.Tensor, kv_slots: torch.Tensor, kv_mask: torch.Tensor | None,
          scale: float) -> torch.Tensor:
        return torch.empty_like(q, memory_format=torch.contiguous_format)


_registered: list[bool] = []


def available() -> bool:
    """Whether the kernels can be used here (loads the library, and registers its shape functions, once)."""
    if not load():
        return False
    if not _registered:
        _register_fakes()
        _registered.append(True)
    return True


class Q8Int4Kernel(LinearKernel):
    """An int4 weight (group-wise, symmetric or not) for few-row calls; output in x's dtype."""

    w4: torch.Tensor
    scale: torch.Tensor
    bias: torch.Tensor

    def __init__(self, qt: QuantizedTensor) -> None:
        super().__init__()
        if not supports(qt):
            raise ValueError(f"q8 int4 kernel cannot take weight {qt.shape} group {qt.group_size}")
        if not available():
            raise RuntimeError("q8 kernels unavailable here (kernels/cpu/build.py says why)")
        w4, scale, bias = pack_int4(qt)
        self.group = qt.group_size
        self.out_features = qt.shape[0]
        self.register_buffer("w4", w4, persistent=False)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = torch.ops.awqserve.q8_w4_mm(x, self.w4, self.scale, self.bias, self.group)
        return out.to(x.dtype)


class Q8Int8RowKernel(LinearKernel):
    """A float weight requantized to int8 per output row (the logits projection at decode)."""

    w8: torch.Tensor
    rscale: torch.Tensor

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        if weight.shape[1] % BLOCK:
            raise ValueError(f"q8 int8 kernel needs in_features % {BLOCK} == 0, got {tuple(weight.shape)}")
        if not available():
            raise RuntimeError("q8 kernels unavailable here (kernels/cpu/build.py says why)")
        w8, rscale = quantize_rows_int8(weight)
        self.out_features = weight.shape[0]
        self.register_buffer("w8", w8, persistent=False)
        self.register_buffer("rscale", rscale, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = torch.ops.awqserve.q8_w8_mm(x, self.w8, self.rscale)
        return out.to(x.dtype)

