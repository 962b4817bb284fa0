"""Triton paged attention (decode with splits, varlen prefill over paged KV) vs the torch reference
backend, under the Triton interpreter: GQA, scattered block tables, chunked prefill with context,
mixed decode + prefill steps, head dims 32 and 256 (Qwen3-Next)."""
from __future__ import annotations

import _triton_interp  # noqa: F401  (must precede the kernel import)
import pytest
import torch

from _triton_interp import rel_err
from awqserve.attention.metadata import build_context
from awqserve.attention.torch_backend import TorchPagedAttention
from awqserve.attention.triton_backend import TritonPagedAttention

BLOCK = 16


def _case(query_lens: list[int], context_lens: list[int], hq: int, hkv: int, d: int, seed: int = 0):  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(seed)
    blocks_per_seq = [-(-(q + c) // BLOCK) for q, c in zip(query_lens, context_lens)]
    num_blocks = sum(blocks_per_seq) + 3
    perm = torch.randperm(num_blocks, generator=gen).tolist()  # scattered, non-contiguous blocks
    tables, i = [], 0
    for n in blocks_per_seq:
        tables.append(perm[i:i + n])
        i += n
    kv = torch.randn(2, num_blocks, BLOCK, hkv, d, generator=gen)  # garbage outside each sequence
    t = sum(query_lens)
    q, k, v = (torch.randn(t, h, d, generator=gen) for h in (hq, hkv, hkv))
    ctx = build_context(query_lens=query_lens, context_lens=context_lens, block_tables=tables, block_size=BLOCK,
                        kv_caches=[kv])
    return q, k, v, kv, ctx


def _compare(query_lens: list[int], context_lens: list[int], hq: int, hkv: int, d: int, **kw: int) -> float:
    q, k, v, kv, ctx = _case(query_lens, context_lens, hq, hkv, d)
    ref = TorchPagedAttention().forward(q, k, v, kv.clone(), ctx, d ** -0.5)
    out = TritonPagedAttention(**kw).forward(q, k, v, kv.clone(), ctx, d ** -0.5)
    assert out.shape == ref.shape and out.dtype == q.dtype
    return rel_err(out, ref)


@pytest.mark.parametrize("splits", [1, 3, 8])
def test_decode_matches_reference(splits: int) -> None:
    assert _compare([1, 1, 1], [5, 40, 130], hq=8, hkv=2, d=32, decode_splits=splits) < 1e-5


def test_decode_qwen3_next_head_shape() -> None:
    assert _compare([1, 1], [17, 70], hq=16, hkv=2, d=256) < 1e-5  # GQA 8:1, head_dim 256


def test_decode_without_gqa() -> None:
    assert _compare([1], [33], hq=2, hkv=2, d=32) < 1e-5


@pytest.mark.parametrize("query_lens,context_lens", [([40], [0]), ([7, 33], [0, 20]), ([1, 12, 1], [9, 5, 50])])
def test_prefill_and_mixed_steps_match_reference(query_lens: list[int], context_lens: list[int]) -> None:
    assert _compare(query_lens, context_lens, hq=4, hkv=2, d=32) < 1e-5


def test_prefill_head_dim_256() -> None:
    assert _compare([20], [3], hq=4, hkv=1, d=256) < 1e-5


def test_bf16_decode() -> None:
    q, k, v, kv, ctx = _case([1, 1], [30, 64], 8, 2, 64)
    q, k, v, kv = q.bfloat16(), k.bfloat16(), v.bfloat16(), kv.bfloat16()
    ref = TorchPagedAttention().forward(q.float(), k.float(), v.float(), kv.float().clone(), ctx, 0.125)
    out = TritonPagedAttention().forward(q, k, v, kv.clone(), ctx, 0.125)
    assert out.dtype == torch.bfloat16 and rel_err(out, ref) < 2e-2
