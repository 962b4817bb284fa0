"""TorchPagedAttention against a dense per-sequence reference on random paged caches."""
from __future__ import annotations

import math

import pytest
import torch

from awqserve.attention.metadata import build_context
from awqserve.attention.torch_backend import TorchPagedAttention

HQ, HKV, D, BS, NUM_BLOCKS = 4, 2, 16, 4, 64
ATOL = 1e-5  # fp32: the backend and the reference differ only in summation order


def _reference(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, ctx_len: int, scale: float) -> torch.Tensor:
    """q [Lq, HQ, D] at positions ctx_len.., keys/values [L, HKV, D] -> [Lq, HQ, D], causal."""
    rep = HQ // HKV
    k = keys.repeat_interleave(rep, dim=1)
    v = values.repeat_interleave(rep, dim=1)
    out = torch.empty_like(q)
    for i in range(q.shape[0]):
        n = ctx_len + i + 1
        s = torch.einsum("hd,lhd->hl", q[i], k[:n]) * scale
        out[i] = torch.einsum("hl,lhd->hd", s.softmax(-1), v[:n])
    return out


def _run_case(query_lens: list[int], context_lens: list[int], seed: int, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    # NaN everywhere nobody wrote: any read of a foreign or stale slot poisons the result.
    cache = torch.full((2, NUM_BLOCKS, BS, HKV, D), float("nan"), dtype=dtype)
    perm = torch.randperm(NUM_BLOCKS, generator=g).tolist()
    tables, full_k, full_v = [], [], []
    for q_len, c_len in zip(query_lens, context_lens):
        n = q_len + c_len
        table = [perm.pop() for _ in range(math.ceil(n / BS))]
        tables.append(table)
        full_k.append(torch.randn(n, HKV, D, generator=g).to(dtype))
        full_v.append(torch.randn(n, HKV, D, generator=g).to(dtype))
        for pos in range(c_len):  # the cached context, written as earlier steps would have
            blk, off = table[pos // BS], pos % BS
            cache[0, blk, off], cache[1, blk, off] = full_k[-1][pos], full_v[-1][pos]
    ctx = build_context(query_lens=query_lens, context_lens=context_lens, block_tables=tables,
                        block_size=BS, kv_caches=[cache])
    q = torch.randn(sum(query_lens), HQ, D, generator=g).to(dtype)
    k = torch.cat([fk[c:] for fk, c in zip(full_k, context_lens)])
    v = torch.cat([fv[c:] for fv, c in zip(full_v, context_lens)])
    scale = D ** -0.5
    out = TorchPagedAttention().forward(q, k, v, cache, ctx, scale)
    ref, start = [], 0
    for b, (q_len, c_len) in enumerate(zip(query_lens, context_lens)):
        ref.append(_reference(q[start:start + q_len].float(), full_k[b].float(), full_v[b].float(), c_len, scale))
        start += q_len
    return out, torch.cat(ref), cache, ctx, k


@pytest.mark.parametrize("query_lens,context_lens", [
    ([1, 1, 1, 1], [0, 5, 17, 30]),  # decode only, ragged lengths
    ([9], [0]),  # one-shot prefill
    ([6, 1, 5], [11, 7, 0]),  # chunked prefill + decode + fresh prefill
    ([3, 1, 1, 13, 2], [4, 0, 22, 9, 1]),  # mixed
])
def test_matches_dense_reference(query_lens: list[int], context_lens: list[int]) -> None:
    out, ref, *_ = _run_case(query_lens, context_lens, seed=sum(query_lens) + len(context_lens))
    assert out.shape == ref.shape
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=1e-5)


def test_writes_new_tokens_to_their_slots() -> None:
    _, _, cache, ctx, k = _run_case([3, 1], [2, 4], seed=3)
    flat_k = cache[0].reshape(-1, HKV, D)
    torch.testing.assert_close(flat_k[ctx.slot_mapping], k)


def test_bfloat16_close_to_fp32_reference() -> None:
    out, ref, *_ = _run_case([4, 1, 1], [3, 8, 0], seed=11, dtype=torch.bfloat16)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)  # bf16 has ~3 significant digits


def test_plan_is_reused_across_layers_of_one_step() -> None:
    backend = TorchPagedAttention()
    ctx = build_context(query_lens=[1, 2], context_lens=[3, 0], block_tables=[[0], [1]], block_size=BS)
    assert backend.plan(ctx) is backend.plan(ctx)
    other = build_context(query_lens=[1, 2], context_lens=[3, 0], block_tables=[[0], [1]], block_size=BS)
    assert backend.plan(other) is not backend.plan(ctx)
