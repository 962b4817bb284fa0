"""W4A16 matmul in Triton over `W4A16Weight` (int4 weights, 16-bit activations, float32 accumulate).

One kernel, two launch shapes:
- prefill (M > GEMV_MAX_M): a tiled GEMM, one program per [BLOCK_M, BLOCK_N] output tile, looping
  over K; the int4 tile is unpacked and dequantized in registers and fed to `tl.dot`.
- decode (M <= GEMV_MAX_M): split-K. A single row-block leaves too few programs to fill the GPU for
  N of a few thousand, so K is cut into SPLIT_K slices whose float32 partials land in a
  [SPLIT_K, M, N] buffer summed by one torch reduction (deterministic, unlike atomics, and graph-safe).

A K-tile never spans two quantization groups (BLOCK_K divides the group size), so each tile needs
one row of scales (and zeros) per column. Symmetric and asymmetric weights, groups 32/64/128.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from awqserve.kernels.w4a16_layout import W4A16Weight

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
"""Triton's CPU interpreter multiplies bf16 dot operands as raw bits (3.6): there, dots run in float32
on the same bf16-rounded values (DOT_F32), which is what the GPU's bf16 dot computes."""
EXPAND_WORDS = True
"""Load each packed word once and repeat it for its 8 rows in registers (True), or load it once per
row through the cache (False). Both are checked; bench/gpu times both at the 80B shapes."""
GEMV_MAX_M = 16
"""Rows up to which the split-K launch is used (decode batches)."""
TARGET_PROGRAMS = 264
"""Programs the split-K launch aims for (two waves of an H100's 132 SMs)."""


@triton.jit
def _w4a16_kernel(  # type: ignore[no-untyped-def]
        x_ptr, qw_ptr, s_ptr, z_ptr, out_ptr, M, N, K, k_per_split, stride_xm, stride_om, stride_os,
        GROUP: tl.constexpr, HAS_ZP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr, DOT_F32: tl.constexpr, EXPAND: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    rw = tl.arange(0, BLOCK_K // 8)
    m_ok = offs_m < M
    n_ok = offs_n < N
    shifts = ((rk % 8) * 4)[:, None]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    k_lo = pid_k * k_per_split
    for kk in range(0, k_per_split, BLOCK_K):  # slices divide K exactly (see _split_k)
        k0 = k_lo + kk
        offs_k = k0 + rk
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=m_ok[:, None], other=0.0)
        words = _load_words(qw_ptr, k0, offs_k, rw, offs_n, n_ok, N, BLOCK_K, BLOCK_N, EXPAND)
        nib = ((words >> shifts) & 0xF).to(tl.float32)  # [BLOCK_K, BLOCK_N]
        g = k0 // GROUP
        scale = tl.load(s_ptr + g * N + offs_n, mask=n_ok, other=0.0).to(tl.float32)
        if HAS_ZP:
            zero = tl.load(z_ptr + g * N + offs_n, mask=n_ok, other=8).to(tl.float32)
        else:
            zero = tl.full((BLOCK_N,), 8.0, tl.float32)
        w = ((nib - zero[None, :]) * scale[None, :]).to(x.dtype)
        if DOT_F32:
            acc += tl.dot(x.to(tl.float32), w.to(tl.float32))
        else:
            acc += tl.dot(x, w)
    out = out_ptr + pid_k * stride_os + offs_m[:, None] * stride_om + offs_n[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def _load_words(  # type: ignore[no-untyped-def]
        qw_ptr, k0, offs_k, rw, offs_n, n_ok, N, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, EXPAND: tl.constexpr):
    """The [BLOCK_K, BLOCK_N] packed words of a K-tile: row k holds word k // 8."""
    if EXPAND:  # one load per word, then each word repeated for its 8 rows (row 8i + j = nibble j)
        packed = tl.load(qw_ptr + (k0 // 8 + rw)[:, None] * N + offs_n[None, :], mask=n_ok[None, :], other=0)
        words = tl.reshape(tl.broadcast_to(packed[:, None, :], (BLOCK_K // 8, 8, BLOCK_N)), (BLOCK_K, BLOCK_N))
    else:
        words = tl.load(qw_ptr + (offs_k // 8)[:, None] * N + offs_n[None, :], mask=n_ok[None, :], other=0)
    return words


def _block_k(group: int, k: int) -> int:
    return next(b for b in (128, 64, 32) if group % b == 0 and k % b == 0)


def _split_k(want: int, k_tiles: int) -> int:
    """The largest divisor of the K-tile count not above `want`: every slice is whole, so the kernel
    needs no K mask."""
    want = max(1, min(want, k_tiles))
    return next(s for s in range(want, 0, -1) if k_tiles % s == 0)


def w4a16_matmul(x: torch.Tensor, w: W4A16Weight, *, split_k: int | None = None,
                 block_n: int | None = None, expand_words: bool = EXPAND_WORDS) -> torch.Tensor:
    """x [M, K] (bf16/fp16/fp32, contiguous rows) @ Wᵀ → [M, N] in x's dtype, any M >= 0.

    `split_k` / `block_n` override the launch heuristics (tests and tuning); split-K applies to any M.
    """
    n, k = w.shape
    m = x.shape[0]
    if x.shape[1] != k:
        raise ValueError(f"x has {x.shape[1]} columns, weight expects {k}")
    if m == 0:
        return x.new_empty((0, n))
    x = x.contiguous()
    gemv = m <= GEMV_MAX_M
    bm = 16 if gemv else (32 if m <= 64 else 64)
    bn = block_n or (64 if gemv else 128)
    bk = _block_k(w.group_size, k) if not gemv else min(_block_k(w.group_size, k), 64)
    m_blocks, n_blocks, k_tiles = triton.cdiv(m, bm), triton.cdiv(n, bn), k // bk
    # decode: aim for about TARGET_PROGRAMS programs; prefill grids are full already
    want = split_k or (TARGET_PROGRAMS // (m_blocks * n_blocks) if gemv else 1)
    splits = _split_k(want, k_tiles)
    k_per_split = k_tiles // splits * bk
    if splits == 1:
        out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    else:
        out = torch.empty((splits, m, n), dtype=torch.float32, device=x.device)
    zeros = w.zeros if w.zeros is not None else w.scales  # placeholder pointer, never read
    grid = (m_blocks, n_blocks, splits)
    _w4a16_kernel[grid](x, w.qweight, w.scales, zeros, out, m, n, k, k_per_split, x.stride(0), n, m * n,
                        GROUP=w.group_size, HAS_ZP=w.zeros is not None, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
                        DOT_F32=INTERPRETED, EXPAND=expand_words, num_warps=4)
    return out if splits == 1 else out.sum(dim=0).to(x.dtype)
