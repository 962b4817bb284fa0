"""Fused MoE: routing alignment (no host sync, static shapes) and the grouped int4 kernels vs the
torch reference, under the Triton interpreter on small shapes (sym/asym, each group size, empty
experts, decode and prefill token counts)."""
from __future__ import annotations

import _triton_interp  # noqa: F401  (must precede the kernel import)
import pytest
import torch

from _triton_interp import rel_err
from awqserve.kernels.moe_align import StackedW4A16, align_by_expert, max_blocks, reference_moe
from awqserve.kernels.triton.fused_moe import fused_moe
from awqserve.kernels.w4a16_layout import from_quantized
from awqserve.quant.packing import quantize_rtn

H, INTER = 64, 32


def _experts(num: int, n: int, k: int, group: int, symmetric: bool, dtype: torch.dtype) -> StackedW4A16:
    return StackedW4A16.stack([from_quantized(quantize_rtn(torch.randn(n, k) * 0.1, group, symmetric), dtype)
                               for _ in range(num)])


def _route(t: int, num_experts: int, top_k: int, used: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k ids drawn from the first `used` experts only (the rest stay empty), softmax weights."""
    ids = torch.stack([torch.randperm(used)[:top_k] for _ in range(t)]) if t else torch.zeros(0, top_k)
    return ids.to(torch.int64), torch.softmax(torch.randn(t, top_k), -1)


@pytest.mark.parametrize("t,top_k,experts,block_m", [(1, 2, 8, 16), (5, 3, 6, 4), (40, 2, 4, 8), (3, 1, 16, 16)])
def test_alignment_places_every_pair_once(t: int, top_k: int, experts: int, block_m: int) -> None:
    ids, _ = _route(t, experts, top_k, experts)
    al = align_by_expert(ids, experts, block_m)
    p = t * top_k
    assert al.num_blocks == max_blocks(p, experts, block_m)
    pairs = al.sorted_pairs.view(al.num_blocks, block_m)
    real = pairs[pairs < p]
    assert sorted(real.tolist()) == list(range(p))
    flat = ids.reshape(-1)
    for b in range(al.num_blocks):
        members = pairs[b][pairs[b] < p].long()
        e = int(al.block_expert[b])
        if e < 0:
            assert members.numel() == 0
        else:
            assert members.numel() > 0 and bool((flat[members] == e).all())


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group", [32, 64])
@pytest.mark.parametrize("t", [1, 6, 33])
def test_fused_moe_matches_reference(t: int, group: int, symmetric: bool) -> None:
    torch.manual_seed(t + group)
    num_experts, top_k = 8, 2
    w13 = _experts(num_experts, 2 * INTER, H, group, symmetric, torch.float32)
    w2 = _experts(num_experts, H, INTER, group if INTER % group == 0 else 32, symmetric, torch.float32)
    ids, weights = _route(t, num_experts, top_k, used=5)  # experts 5..7 empty
    x = torch.randn(t, H)
    out = fused_moe(x, ids, weights, w13, w2)
    assert out.shape == (t, H)
    assert rel_err(out, reference_moe(x, ids, weights, w13, w2)) < 1e-5


def test_group_128_and_bf16() -> None:
    torch.manual_seed(3)
    w13 = _experts(4, 2 * 128, 128, 128, True, torch.bfloat16)
    w2 = _experts(4, 128, 128, 128, True, torch.bfloat16)
    ids, weights = _route(4, 4, 2, used=3)
    x = torch.randn(4, 128).to(torch.bfloat16)
    assert rel_err(fused_moe(x, ids, weights, w13, w2), reference_moe(x, ids, weights, w13, w2)) < 2e-2


def test_small_blocks_and_no_tokens() -> None:
    torch.manual_seed(4)
    w13 = _experts(6, 2 * INTER, H, 32, False, torch.float32)
    w2 = _experts(6, H, INTER, 32, False, torch.float32)
    ids, weights = _route(9, 6, 3, used=6)
    x = torch.randn(9, H)
    ref = reference_moe(x, ids, weights, w13, w2)
    assert rel_err(fused_moe(x, ids, weights, w13, w2, block_m=2), ref) < 1e-5
    assert fused_moe(x[:0], ids[:0], weights[:0], w13, w2).shape == (0, H)
