"""Fused MoE over int4 experts in Triton: one grouped launch for gate+up, one for down.

The scheme vLLM and SGLang use: pairs (token, choice) are sorted by expert into row blocks
(`kernels.moe_align.align_by_expert`, torch ops, no host sync); program (b, n) multiplies block b's
gathered rows by column tile n of expert `block_expert[b]`'s int4 weight, dequantized in registers.

    h   = x[pair // top_k] @ W13[e]ᵀ          [P, 2I]   (launch 1; rows gathered by token)
    a   = silu(h[:, :I]) * h[:, I:]           [P, I]    (torch)
    y   = weight[pair] * (a[pair] @ W2[e]ᵀ)   [P, H]    (launch 2; top-k weight applied in-kernel)
    out = y.view(T, top_k, H).sum(1)                    (torch)

Each block's rows all belong to one expert, so a program reads one expert's weight tile once for up to
BLOCK_M rows; blocks past the last used one return before reading anything. No Python loop over
experts, no host sync: the whole layer can live in a CUDA graph.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from awqserve.kernels.moe_align import MoEAlignment, StackedW4A16, align_by_expert
from awqserve.kernels.triton.w4a16 import EXPAND_WORDS, INTERPRETED, _load_words


@triton.jit
def _grouped_w4a16_kernel(  # type: ignore[no-untyped-def]
        x_ptr, qw_ptr, s_ptr, z_ptr, out_ptr, pairs_ptr, block_expert_ptr, topw_ptr,
        num_pairs, N, K, stride_xm, stride_om, stride_qe, stride_se,
        ROW_DIV: tl.constexpr, MUL_WEIGHT: tl.constexpr, GROUP: tl.constexpr,
        HAS_ZP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr, DOT_F32: tl.constexpr, EXPAND: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    e = tl.load(block_expert_ptr + pid_m)
    if e < 0:
        return
    pairs = tl.load(pairs_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
    valid = pairs < num_pairs
    rows = pairs // ROW_DIV
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    rk = tl.arange(0, BLOCK_K)
    rw = tl.arange(0, BLOCK_K // 8)
    shifts = ((rk % 8) * 4)[:, None]
    qw = qw_ptr + e.to(tl.int64) * stride_qe
    sp = s_ptr + e.to(tl.int64) * stride_se
    zp = z_ptr + e.to(tl.int64) * stride_se
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + rk
        x = tl.load(x_ptr + rows[:, None] * stride_xm + offs_k[None, :], mask=valid[:, None], other=0.0)
        words = _load_words(qw, k0, offs_k, rw, offs_n, n_ok, N, BLOCK_K, BLOCK_N, EXPAND)
        nib = ((words >> shifts) & 0xF).to(tl.float32)
        g = k0 // GROUP
        scale = tl.load(sp + g * N + offs_n, mask=n_ok, other=0.0).to(tl.float32)
        if HAS_ZP:
            zero = tl.load(zp + g * N + offs_n, mask=n_ok, other=8).to(tl.float32)
        else:
            zero = tl.full((BLOCK_N,), 8.0, tl.float32)
        w = ((nib - zero[None, :]) * scale[None, :]).to(x.dtype)
        if DOT_F32:
            acc += tl.dot(x.to(tl.float32), w.to(tl.float32))
        else:
            acc += tl.dot(x, w)
    if MUL_WEIGHT:
        acc *= tl.load(topw_ptr + pairs, mask=valid, other=0.0).to(tl.float32)[:, None]
    out = out_ptr + pairs[:, None].to(tl.int64) * stride_om + offs_n[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=valid[:, None] & n_ok[None, :])


def block_m_for(num_pairs: int, num_experts: int) -> int:
    """Rows per block: 16 when an expert sees few rows (decode), larger when each sees many (prefill)."""
    per_expert = num_pairs / max(1, num_experts)
    return 16 if per_expert <= 16 else (32 if per_expert <= 48 else 64)


def grouped_w4a16(x: torch.Tensor, w: StackedW4A16, align: MoEAlignment, out: torch.Tensor, *, row_div: int,
                  topk_weights: torch.Tensor | None = None, block_n: int = 64) -> torch.Tensor:
    """out[p] = (topk_weights[p] *) x[p // row_div] @ W[e(p)]ᵀ for every pair p; returns `out` [P, N]."""
    n, k = w.shape
    bk = next(b for b in (64, 32) if w.group_size % b == 0 and k % b == 0)
    zeros = w.zeros if w.zeros is not None else w.scales
    grid = (align.num_blocks, triton.cdiv(n, block_n))
    _grouped_w4a16_kernel[grid](
        x, w.qweight, w.scales, zeros, out, align.sorted_pairs, align.block_expert,
        topk_weights if topk_weights is not None else out, align.num_pairs, n, k, x.stride(0), out.stride(0),
        w.qweight.stride(0), w.scales.stride(0), ROW_DIV=row_div, MUL_WEIGHT=topk_weights is not None,
        GROUP=w.group_size, HAS_ZP=w.zeros is not None, BLOCK_M=align.block_m, BLOCK_N=block_n, BLOCK_K=bk,
        DOT_F32=INTERPRETED, EXPAND=EXPAND_WORDS, num_warps=4)
    return out


def fused_moe(x: torch.Tensor, ids: torch.Tensor, topk_weights: torch.Tensor, w13: StackedW4A16,
              w2: StackedW4A16, *, block_m: int | None = None) -> torch.Tensor:
    """Routed experts of one MoE layer: x [T, H], ids/topk_weights [T, top_k] → float32 [T, H].

    `w13` [E, 2I, H] holds each expert's gate rows then up rows; `w2` [E, H, I]. Experts nobody chose
    cost nothing; `block_m` overrides the rows-per-block heuristic (tests)."""
    t, top_k = ids.shape
    hidden, inter = w2.shape[0], w2.shape[1]
    p = t * top_k
    if t == 0:
        return torch.zeros((0, hidden), dtype=torch.float32, device=x.device)
    align = align_by_expert(ids, w13.num_experts, block_m or block_m_for(p, w13.num_experts))
    x = x.contiguous()
    h = torch.empty((p, 2 * inter), dtype=x.dtype, device=x.device)
    grouped_w4a16(x, w13, align, h, row_div=top_k)
    a = (F.silu(h[:, :inter].float()) * h[:, inter:].float()).to(x.dtype)
    y = torch.empty((p, hidden), dtype=torch.float32, device=x.device)
    grouped_w4a16(a, w2, align, y, row_div=1, topk_weights=topk_weights.reshape(-1).float().contiguous())
    return y.view(t, top_k, hidden).sum(dim=1)
