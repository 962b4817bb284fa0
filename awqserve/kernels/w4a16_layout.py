"""The int4 weight layout the Triton W4A16 kernels read, and its torch reference matmul.

`W4A16Weight` is built once at load from the canonical `QuantizedTensor` (one int4 copy, no float
weight kept). Layout, chosen so a K-tile × N-tile of weights is one coalesced load along N:

- `qweight` int32 [K/8, N]: word (w, n) holds the unsigned nibbles u = q + 8 of W[n, 8w .. 8w+7],
  nibble i at bits 4i..4i+3 (compressed-tensors' `weight_packed` transposed, i.e. GPTQ's `qweight`);
- `scales` [K/G, N] in the activation dtype;
- `zeros` None (symmetric: the zero nibble is 8) or uint8 [K/G, N] holding uz = z + 8.

W[n, k] = (u[k, n] - uz[k // G, n]) * scales[k // G, n]. Only torch here; the kernels are in
`awqserve.kernels.triton.w4a16`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from awqserve.quant.base import QuantizedTensor

GROUP_SIZES = (32, 64, 128)
"""Group sizes the Triton kernels take (the issue's set; a K-tile never spans two groups)."""


@dataclass
class W4A16Weight:
    """One int4 weight in the kernels' layout; `shape` is the float weight's [N, K]."""

    qweight: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    group_size: int

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.qweight.shape[1]), int(self.qweight.shape[0]) * 8

    @property
    def nbytes(self) -> int:
        """Device bytes of this copy (what a forward reads from memory)."""
        parts = [self.qweight, self.scales] + ([self.zeros] if self.zeros is not None else [])
        return sum(t.numel() * t.element_size() for t in parts)


def supports(qt: QuantizedTensor) -> bool:
    """Whether the Triton kernels take this weight (group 32/64/128 dividing K, K a multiple of 8)."""
    n, k = qt.shape
    return qt.group_size in GROUP_SIZES and k % qt.group_size == 0 and k % 8 == 0 and n > 0


def pack_nibbles_k(u: torch.Tensor) -> torch.Tensor:
    """uint-valued [N, K] (0..15, any int dtype) → int32 [K/8, N], nibble i of word w = column 8w+i."""
    n, k = u.shape
    words = u.to(torch.int32).reshape(n, k // 8, 8)
    shifts = torch.arange(0, 32, 4, dtype=torch.int32, device=u.device)
    # int32 wrap-around is wanted for nibble 7 (bit 31): a sum of disjoint bit fields equals their OR
    return (words << shifts).sum(dim=-1, dtype=torch.int32).t().contiguous()


def unpack_nibbles_k(qweight: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_nibbles_k`: int32 [K/8, N] → uint8 [N, K] nibbles."""
    kw, n = qweight.shape
    shifts = torch.arange(0, 32, 4, dtype=torch.int32, device=qweight.device)
    nib = (qweight.t().unsqueeze(-1) >> shifts) & 0xF
    return nib.reshape(n, kw * 8).to(torch.uint8)


def from_quantized(qt: QuantizedTensor, dtype: torch.dtype = torch.bfloat16,
                   device: torch.device | str | None = None) -> W4A16Weight:
    """Repack a canonical int4 weight (works on meta tensors too: shapes only)."""
    if not supports(qt):
        raise ValueError(f"W4A16 kernels cannot take weight {qt.shape} group {qt.group_size}")
    dev = torch.device(device) if device is not None else qt.qweight.device
    if dev.type == "meta":  # shapes only (byte accounting of whole models): skip the meta op tracing
        n, k = qt.shape
        zeros = None if qt.zeros is None else torch.empty((k // qt.group_size, n), dtype=torch.uint8, device=dev)
        return W4A16Weight(torch.empty((k // 8, n), dtype=torch.int32, device=dev),
                           torch.empty((k // qt.group_size, n), dtype=dtype, device=dev), zeros, qt.group_size)
    u = (qt.qweight.to(device=dev, dtype=torch.int16) + 8)
    scales = qt.scales.to(device=dev, dtype=dtype).t().contiguous()
    zeros = None if qt.zeros is None else (qt.zeros.to(device=dev, dtype=torch.int16) + 8).to(torch.uint8).t().contiguous()
    return W4A16Weight(pack_nibbles_k(u), scales, zeros, qt.group_size)


def dequantize(w: W4A16Weight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The float weight [N, K] (reference; the kernels never materialise it)."""
    u = unpack_nibbles_k(w.qweight).to(torch.float32)  # [N, K]
    n, k = u.shape
    z = 8.0 if w.zeros is None else w.zeros.t().to(torch.float32).repeat_interleave(w.group_size, dim=1)
    s = w.scales.t().to(torch.float32).repeat_interleave(w.group_size, dim=1)
    return ((u - z) * s).to(dtype)


def reference_matmul(x: torch.Tensor, w: W4A16Weight) -> torch.Tensor:
    """x [M, K] @ Wᵀ in float32 → [M, N] float32: what the kernels must compute."""
    return x.to(torch.float32) @ dequantize(w).t()
