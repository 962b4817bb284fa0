"""`awqserve::decode_attn` (kernels/cpu/decode_attn.c) against the eager decode attention (SDPA over the
gathered slots), and its use by the compiled batched decode step's traceable attention."""
from __future__ import annotations

import pytest
import torch

from awqserve.attention.decode_op import (attend_decode, build_decode_meta, native_decode_attention,
                                          paged_decode_eager, paged_decode_traceable)
from awqserve.kernels.cpu import build, q8_kernels

pytestmark = pytest.mark.skipif(not q8_kernels.available(), reason=f"CPU ops unavailable: {build.unavailable_reason()}")


def _case(b: int, length: int, hkv: int, hq: int, d: int, seed: int = 0, bs: int = 16):
    g = torch.Generator().manual_seed(seed)
    per = length // bs + 2
    cache = torch.randn(2, b * per, bs, hkv, d, generator=g)
    tables = torch.randperm(b * per, generator=g).view(b, per)
    lens = [max(1, length - 5 * i) for i in range(b)]
    meta = build_decode_meta(tables, lens, bs)
    q = torch.randn(b, hq, d, generator=g) * 3  # peaked softmax: exercises the max subtraction
    return q, cache, meta


@pytest.mark.parametrize("b,length,hkv,hq,d", [(16, 400, 3, 9, 64), (3, 37, 2, 16, 128), (5, 9, 1, 8, 256),
                                               (2, 1, 4, 4, 8), (4, 70, 2, 2, 64), (1, 33, 1, 4, 64)])
def test_matches_sdpa_over_the_gathered_slots(b: int, length: int, hkv: int, hq: int, d: int) -> None:
    q, cache, meta = _case(b, length, hkv, hq, d)
    want = attend_decode(q, cache, meta.kv_slots, meta.kv_mask, d ** -0.5)
    got = torch.ops.awqserve.decode_attn(q, cache, meta.kv_slots, meta.kv_mask, d ** -0.5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-5)


def test_masked_positions_are_ignored_even_when_huge() -> None:
    q, cache, meta = _case(3, 40, 2, 4, 64)
    assert meta.kv_mask is not None
    poisoned = cache.clone()
    flat = poisoned.view(2, -1, 2, 64)
    hidden = meta.kv_slots[~meta.kv_mask.view(3, -1)]
    visible = meta.kv_slots[meta.kv_mask.view(3, -1)]
    only_hidden = torch.tensor(sorted(set(hidden.tolist()) - set(visible.tolist())), dtype=torch.long)
    flat[:, only_hidden] = 1e30  # slots read only as padding
    got = torch.ops.awqserve.decode_attn(q, poisoned, meta.kv_slots, meta.kv_mask, 0.125)
    want = torch.ops.awqserve.decode_attn(q, cache, meta.kv_slots, meta.kv_mask, 0.125)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want)


def test_traceable_batched_attention_uses_the_kernel_and_matches_eager() -> None:
    q, cache, meta = _case(4, 50, 3, 9, 64, seed=3)
    assert native_decode_attention(q, cache)
    k, v = torch.randn(4, 3, 64), torch.randn(4, 3, 64)
    last = torch.tensor([int(meta.kv_slots[i, n - 1]) for i, n in enumerate([50, 45, 40, 35])])
    c1, c2 = cache.clone(), cache.clone()
    want = paged_decode_eager(q, k, v, c1, last, meta.kv_slots, meta.kv_mask, 0.125)
    got = torch.compile(paged_decode_traceable, fullgraph=True)(q, k, v, c2, last, meta.kv_slots, meta.kv_mask, 0.125)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-5)
    assert torch.equal(c1, c2)  # the new K/V were written before attending, by both


def test_not_used_for_other_dtypes_or_devices() -> None:
    q, cache, _ = _case(2, 10, 1, 2, 64)
    assert not native_decode_attention(q.bfloat16(), cache)
    assert not native_decode_attention(q, cache.bfloat16())
    assert not native_decode_attention(q[..., :60], cache[..., :60])  # head dim not a multiple of 8
