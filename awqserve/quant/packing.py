"""Nibble layouts of 4-bit checkpoints, both directions, plus round-to-nearest quantization.

Layouts (see docs AWQ_FORMATS.md):
- compressed-tensors `pack-quantized`: weight int32 [N, ceil(K/8)], value k of row n in word k // 8 at
  bits 4*(k % 8) (least significant first); zero points int32 [ceil(N/8), K/G] packed the same way but
  along N. Stored nibble = signed value + 8.
- AutoAWQ `gemm`: qweight int32 [K, N/8] and qzeros [K/G, N/8]; bit slot i of a word holds column
  8c + AWQ_ORDER[i]. Nibbles are unsigned, zero points carry no offset.

Everything is vectorised torch (shifts and reshapes); no Python loop touches elements.
"""
from __future__ import annotations

import torch

from awqserve.quant.base import QuantizedTensor

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
"""Bit slot i of an AutoAWQ word holds logical column 8c + AWQ_ORDER[i]."""
AWQ_REVERSE_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)
"""Logical column j of a group of 8 sits in bit slot AWQ_REVERSE_ORDER[j]."""

_SHIFTS = torch.arange(0, 32, 4, dtype=torch.int32)


# --- generic LSB-first nibble packing along the last dim -------------------------------------------

def pack_nibbles(u: torch.Tensor) -> torch.Tensor:
    """Pack unsigned nibbles (any int dtype, values 0..15) along the last dim, 8 per int32, LSB first.

    The last dim is zero-padded up to a multiple of 8; the result has ceil(L / 8) words.
    """
    if u.numel() and (int(u.min()) < 0 or int(u.max()) > 15):
        raise ValueError("nibble values must lie in 0..15")
    length = u.shape[-1]
    pad = (-length) % 8
    v = u.to(torch.int64)
    if pad:
        v = torch.nn.functional.pad(v, (0, pad))
    v = v.reshape(*v.shape[:-1], -1, 8) << _SHIFTS.to(device=v.device, dtype=torch.int64)
    words = v.sum(dim=-1)  # < 2**32, exact in int64
    words = torch.where(words >= 2**31, words - 2**32, words)  # reinterpret as two's complement int32
    return words.to(torch.int32)


def unpack_nibbles(words: torch.Tensor, length: int) -> torch.Tensor:
    """Inverse of `pack_nibbles`: int32 [..., W] -> uint8 nibbles [..., length] (length <= 8 W)."""
    if words.dtype != torch.int32:
        raise ValueError(f"packed nibbles must be int32, got {words.dtype}")
    if length > 8 * words.shape[-1]:
        raise ValueError(f"cannot unpack {length} nibbles from {words.shape[-1]} words")
    shifts = _SHIFTS.to(words.device)
    nib = (words.unsqueeze(-1) >> shifts) & 0xF  # arithmetic shift is fine: we mask 4 bits
    return nib.reshape(*words.shape[:-1], -1)[..., :length].to(torch.uint8)


# --- compressed-tensors pack-quantized ---------------------------------------------------------------

def pack_ct_weight(q: torch.Tensor) -> torch.Tensor:
    """Signed int4 values int8 [N, K] (-8..7) -> `weight_packed` int32 [N, ceil(K/8)]."""
    return pack_nibbles(q.to(torch.int16) + 8)


def unpack_ct_weight(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """`weight_packed` int32 [N, W] -> signed int8 [N, in_features] in -8..7."""
    return (unpack_nibbles(packed, in_features).to(torch.int8) - 8).contiguous()


def pack_ct_zeros(z: torch.Tensor) -> torch.Tensor:
    """Signed zero points int8 [N, K/G] -> `weight_zero_point` int32 [ceil(N/8), K/G] (packed along N)."""
    return pack_ct_weight(z.t()).t().contiguous()


def unpack_ct_zeros(packed: torch.Tensor, out_features: int) -> torch.Tensor:
    """`weight_zero_point` int32 [W, K/G] -> signed int8 [out_features, K/G]."""
    return unpack_ct_weight(packed.t().contiguous(), out_features).t().contiguous()


# --- AutoAWQ gemm ----------------------------------------------------------------------------------

def pack_awq(u: torch.Tensor) -> torch.Tensor:
    """Unsigned nibbles [R, N] (N % 8 == 0) -> AutoAWQ interleaved int32 [R, N/8]."""
    rows, n = u.shape
    if n % 8:
        raise ValueError(f"AutoAWQ packing needs the output dim divisible by 8, got {n}")
    slots = u.reshape(rows, n // 8, 8)[..., list(AWQ_ORDER)]  # slot i <- column ORDER[i]
    return pack_nibbles(slots.reshape(rows, n))


def unpack_awq(words: torch.Tensor) -> torch.Tensor:
    """AutoAWQ interleaved int32 [R, N/8] -> unsigned uint8 nibbles [R, N] in logical column order."""
    rows, w = words.shape
    slots = unpack_nibbles(words, 8 * w).reshape(rows, w, 8)
    return slots[..., list(AWQ_REVERSE_ORDER)].reshape(rows, 8 * w)


def awq_gemm_to_quantized(qweight: torch.Tensor, qzeros: torch.Tensor | None, scales: torch.Tensor,
                          group_size: int) -> QuantizedTensor:
    """AutoAWQ gemm tensors (qweight [K, N/8], qzeros [K/G, N/8] or None, scales [K/G, N]) -> canonical.

    With qzeros the stored zero z_u (0..15) maps to the signed zero z_u - 8, which keeps
    (q_u - z_u) == (q_s - z_s). Without qzeros the layout is symmetric: W = (q_u - 8) * s.
    """
    k = qweight.shape[0]
    q_u = unpack_awq(qweight)  # [K, N]
    n = q_u.shape[1]
    if k % group_size or tuple(scales.shape) != (k // group_size, n):
        raise ValueError(f"AutoAWQ scales shape {tuple(scales.shape)} != {(k // group_size, n)}")
    qs = (q_u.to(torch.int8) - 8).t().contiguous()
    zeros = None
    if qzeros is not None:
        if tuple(qzeros.shape) != (k // group_size, n // 8):
            raise ValueError(f"AutoAWQ qzeros shape {tuple(qzeros.shape)} != {(k // group_size, n // 8)}")
        zeros = (unpack_awq(qzeros).to(torch.int8) - 8).t().contiguous()
    return QuantizedTensor(qs, scales.to(torch.float32).t().contiguous(), zeros, group_size)


def quantized_to_awq_gemm(qt: QuantizedTensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Canonical -> AutoAWQ gemm (qweight, qzeros, scales fp16); symmetric weights get zero 8."""
    z = qt.zeros if qt.zeros is not None else torch.zeros_like(qt.scales, dtype=torch.int8)
    qweight = pack_awq((qt.qweight.to(torch.int16) + 8).t())
    qzeros = pack_awq((z.to(torch.int16) + 8).t())
    return qweight, qzeros, qt.scales.t().to(torch.float16).contiguous()


# --- round-to-nearest quantization (AWQ_FORMATS.md §1) -------------------------------------------

def quantize_rtn(w: torch.Tensor, group_size: int | None, symmetric: bool) -> QuantizedTensor:
    """Quantize a float W [N, K] to signed int4 with one scale (and zero) per `group_size` inputs.

    `group_size` None, -1 or K means channel-wise. Symmetric: s = max|x| / 7.5, q = clamp(round(x/s)).
    Asymmetric: s = (max - min) / 15, zp = clamp(round(-8 - min/s), -8, 7), q = clamp(round(x/s + zp)).
    Degenerate groups: an all-zero group gets s = 1; a constant non-zero group (asymmetric) widens its
    range to include 0 so that the constant is represented exactly.
    """
    n, k = w.shape
    g = k if group_size in (None, -1) else int(group_size)
    if g <= 0 or k % g:
        raise ValueError(f"group size {g} does not divide in_features {k}")
    x = w.to(torch.float32).reshape(n, k // g, g)
    if symmetric:
        s = x.abs().amax(dim=-1) / 7.5
        s = torch.where(s > 0, s, torch.ones_like(s))
        q = torch.clamp(torch.round(x / s.unsqueeze(-1)), -8, 7)
        return QuantizedTensor(q.to(torch.int8).reshape(n, k), s, None, g)
    lo, hi = x.amin(dim=-1), x.amax(dim=-1)
    flat = hi == lo
    lo = torch.where(flat, torch.clamp(lo, max=0.0), lo)
    hi = torch.where(flat, torch.clamp(hi, min=0.0), hi)
    s = (hi - lo) / 15
    s = torch.where(s > 0, s, torch.ones_like(s))
    zp = torch.clamp(torch.round(-8 - lo / s), -8, 7)
    q = torch.clamp(torch.round(x / s.unsqueeze(-1) + zp.unsqueeze(-1)), -8, 7)
    return QuantizedTensor(q.to(torch.int8).reshape(n, k), s, zp.to(torch.int8), g)
