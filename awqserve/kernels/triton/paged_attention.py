"""Paged attention in Triton over the engine's KV cache [2, num_blocks, block_size, Hkv, D].

- `paged_decode`: one query token per sequence. Program (b, kv_head, split) holds the GQA group's
  query heads as one [GROUP_PAD, D] tile, so each K/V tile is read once for all of them, and walks
  its share of the sequence's key tiles through the block table (online softmax). Several splits per
  sequence (flash-decoding) keep the GPU busy at batch 1 with 2 KV heads; their partial (max, sum,
  acc) are merged by `_merge_splits` in torch. The split count is fixed per call, not per sequence
  length, so the launch is CUDA-graph safe.
- `paged_prefill`: varlen causal attention for new tokens (any query length, with cached context):
  program (b, head, q_tile) attends a tile of sequence b's new queries to every key of b up to each
  query's position, keys read from the paged cache (the new K/V are written there first).

Both take q [T, Hq, D] in the flat step layout and return [T, Hq, D] in q's dtype.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from awqserve.kernels.triton.w4a16 import INTERPRETED


@triton.jit
def _decode_kernel(  # type: ignore[no-untyped-def]
        q_ptr, kv_ptr, part_ptr, ml_ptr, tables_ptr, seq_lens_ptr, scale, v_off,
        stride_qt, stride_qh, stride_tb, stride_kb, stride_ks, splits,
        GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr,
        TILE: tl.constexpr, DOT_F32: tl.constexpr):
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    sp = tl.program_id(2)
    num_kv = tl.num_programs(1)
    rg = tl.arange(0, GROUP_PAD)
    rd = tl.arange(0, HEAD_DIM)
    rt = tl.arange(0, TILE)
    g_ok = rg < GROUP
    q = tl.load(q_ptr + b * stride_qt + (kvh * GROUP + rg)[:, None] * stride_qh + rd[None, :], mask=g_ok[:, None],
                other=0.0)
    seq_len = tl.load(seq_lens_ptr + b)
    tiles = tl.cdiv(seq_len, TILE)
    per_split = tl.cdiv(tiles, splits)
    m = tl.full((GROUP_PAD,), float("-inf"), tl.float32)
    lsum = tl.zeros((GROUP_PAD,), tl.float32)
    acc = tl.zeros((GROUP_PAD, HEAD_DIM), tl.float32)
    for i in range(0, per_split):
        pos = (sp * per_split + i) * TILE + rt
        ok = pos < seq_len
        blk = tl.load(tables_ptr + b * stride_tb + pos // BLOCK_SIZE, mask=ok, other=0)
        off = blk.to(tl.int64) * stride_kb + (pos % BLOCK_SIZE) * stride_ks + kvh * HEAD_DIM
        k = tl.load(kv_ptr + off[:, None] + rd[None, :], mask=ok[:, None], other=0.0)
        v = tl.load(kv_ptr + v_off + off[:, None] + rd[None, :], mask=ok[:, None], other=0.0)
        if DOT_F32:
            s = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)))
        else:
            s = tl.dot(q.to(k.dtype), tl.trans(k))
        s = tl.where(ok[None, :], s * scale, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a fully masked tile: keep zeros
        p = tl.exp(s - m_safe[:, None])
        alpha = tl.exp(m - m_safe)
        lsum = lsum * alpha + tl.sum(p, 1)
        if DOT_F32:
            acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32))
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m = m_new
    heads = kvh * GROUP + rg
    row = (b * num_kv * GROUP + heads) * splits + sp
    tl.store(part_ptr + row[:, None] * HEAD_DIM + rd[None, :], acc, mask=g_ok[:, None])
    tl.store(ml_ptr + row * 2, m, mask=g_ok)
    tl.store(ml_ptr + row * 2 + 1, lsum, mask=g_ok)


def _merge_splits(part: torch.Tensor, ml: torch.Tensor) -> torch.Tensor:
    """Combine per-split (acc [.., S, D], max, sum) into softmax-weighted outputs [.., D] (float32)."""
    m, lsum = ml[..., 0], ml[..., 1]
    m_all = m.amax(dim=-1, keepdim=True)
    w = torch.exp(torch.where(torch.isinf(m), float("-inf"), m - m_all))  # empty splits weigh 0
    return (part * w[..., None]).sum(-2) / (lsum * w).sum(-1, keepdim=True)


def paged_decode(q: torch.Tensor, kv_cache: torch.Tensor, block_tables: torch.Tensor, seq_lens: torch.Tensor,
                 scale: float, *, splits: int = 8, tile: int = 64) -> torch.Tensor:
    """q [B, Hq, D] (one token per sequence) → [B, Hq, D]; keys 0..seq_lens[b]-1 of sequence b."""
    bsz, hq, d = q.shape
    _, _, block_size, hkv, _ = kv_cache.shape
    group = hq // hkv
    part = torch.empty((bsz, hq, splits, d), dtype=torch.float32, device=q.device)
    ml = torch.empty((bsz, hq, splits, 2), dtype=torch.float32, device=q.device)
    q = q.contiguous()
    _decode_kernel[(bsz, hkv, splits)](
        q, kv_cache, part, ml, block_tables, seq_lens, scale, kv_cache.stride(0), q.stride(0), q.stride(1),
        block_tables.stride(0), kv_cache.stride(1), kv_cache.stride(2), splits, GROUP=group,
        GROUP_PAD=max(16, triton.next_power_of_2(group)), HEAD_DIM=d, BLOCK_SIZE=block_size, TILE=tile,
        DOT_F32=INTERPRETED, num_warps=4)
    return _merge_splits(part, ml).to(q.dtype)


@triton.jit
def _prefill_kernel(  # type: ignore[no-untyped-def]
        q_ptr, kv_ptr, out_ptr, tables_ptr, q_start_ptr, ctx_lens_ptr, scale, v_off,
        stride_qt, stride_qh, stride_tb, stride_kb, stride_ks,
        GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_Q: tl.constexpr,
        TILE: tl.constexpr, DOT_F32: tl.constexpr):
    b = tl.program_id(0)
    h = tl.program_id(1)
    qt = tl.program_id(2)
    q_lo = tl.load(q_start_ptr + b)
    q_len = tl.load(q_start_ptr + b + 1) - q_lo
    if qt * BLOCK_Q >= q_len:
        return
    ctx = tl.load(ctx_lens_ptr + b)
    kvh = h // GROUP
    rq = qt * BLOCK_Q + tl.arange(0, BLOCK_Q)
    rd = tl.arange(0, HEAD_DIM)
    rt = tl.arange(0, TILE)
    q_ok = rq < q_len
    q = tl.load(q_ptr + (q_lo + rq)[:, None] * stride_qt + h * stride_qh + rd[None, :], mask=q_ok[:, None], other=0.0)
    q_pos = ctx + rq
    last = ctx + tl.minimum((qt + 1) * BLOCK_Q, q_len)  # keys beyond the tile's last query are unseen
    m = tl.full((BLOCK_Q,), float("-inf"), tl.float32)
    lsum = tl.zeros((BLOCK_Q,), tl.float32)
    acc = tl.zeros((BLOCK_Q, HEAD_DIM), tl.float32)
    for t0 in range(0, tl.cdiv(last, TILE)):
        pos = t0 * TILE + rt
        ok = pos < last
        blk = tl.load(tables_ptr + b * stride_tb + pos // BLOCK_SIZE, mask=ok, other=0)
        off = blk.to(tl.int64) * stride_kb + (pos % BLOCK_SIZE) * stride_ks + kvh * HEAD_DIM
        k = tl.load(kv_ptr + off[:, None] + rd[None, :], mask=ok[:, None], other=0.0)
        v = tl.load(kv_ptr + v_off + off[:, None] + rd[None, :], mask=ok[:, None], other=0.0)
        if DOT_F32:
            s = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)))
        else:
            s = tl.dot(q.to(k.dtype), tl.trans(k))
        seen = ok[None, :] & (pos[None, :] <= q_pos[:, None])
        s = tl.where(seen, s * scale, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp(s - m_safe[:, None])
        alpha = tl.exp(m - m_safe)
        lsum = lsum * alpha + tl.sum(p, 1)
        if DOT_F32:
            acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32))
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m = m_new
    out = acc / tl.where(lsum == 0.0, 1.0, lsum)[:, None]
    dst = out_ptr + (q_lo + rq)[:, None] * stride_qt + h * stride_qh + rd[None, :]
    tl.store(dst, out.to(out_ptr.dtype.element_ty), mask=q_ok[:, None])


def paged_prefill(q: torch.Tensor, kv_cache: torch.Tensor, block_tables: torch.Tensor, query_start_loc: torch.Tensor,
                  context_lens: torch.Tensor, max_query_len: int, scale: float, *, block_q: int = 32,
                  tile: int = 32) -> torch.Tensor:
    """q [T, Hq, D] (new tokens, flat) → [T, Hq, D]; query i of sequence b sits at context_lens[b] + i.

    `max_query_len` (a host int) sizes the grid; the new K/V must already be in `kv_cache`."""
    t, hq, d = q.shape
    _, _, block_size, hkv, _ = kv_cache.shape
    q = q.contiguous()
    out = torch.empty_like(q)
    if t == 0:
        return out
    grid = (context_lens.shape[0], hq, triton.cdiv(max_query_len, block_q))
    _prefill_kernel[grid](q, kv_cache, out, block_tables, query_start_loc, context_lens, scale, kv_cache.stride(0),
                          q.stride(0), q.stride(1), block_tables.stride(0), kv_cache.stride(1), kv_cache.stride(2),
                          GROUP=hq // hkv, HEAD_DIM=d, BLOCK_SIZE=block_size, BLOCK_Q=block_q, TILE=tile,
                          DOT_F32=INTERPRETED, num_warps=4)
    return out
