"""Routing bookkeeping for the fused MoE kernels, in torch ops with static shapes (no host sync).

A step routes T tokens to top_k experts each: P = T * top_k (token, choice) pairs, pair p = t * top_k + j.
`align_by_expert` sorts the pairs by expert and cuts each expert's pairs into row blocks of
`block_m`, so one program of the grouped kernel handles one block: a single expert's weights times up
to `block_m` gathered rows. Every shape depends only on (T, top_k, E, block_m), never on the routing,
so the result can be computed inside a CUDA graph and the launch grid is fixed:

- `num_blocks` = min(P, ceil(P / block_m) + E): each non-empty block holds at least one pair, and
  sum_e ceil(c_e / block_m) <= ceil(P / block_m) + E. Batch 1 of Qwen3-Next: 10 blocks, not 512.
- `sorted_pairs` int32 [num_blocks * block_m]: the pairs, expert after expert, each expert's run
  starting on a block boundary; padding slots hold P (an invalid pair the kernel masks out).
- `block_expert` int32 [num_blocks]: the expert of each block, -1 past the last used block
  (the kernel returns at once: those programs read no weights).

Also here: `StackedW4A16` (all experts' int4 weights in one tensor per projection) and the torch
reference of the whole routed-expert computation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from awqserve.kernels.w4a16_layout import W4A16Weight, dequantize


@dataclass
class MoEAlignment:
    sorted_pairs: torch.Tensor
    block_expert: torch.Tensor
    num_pairs: int
    block_m: int

    @property
    def num_blocks(self) -> int:
        return int(self.block_expert.shape[0])


def max_blocks(num_pairs: int, num_experts: int, block_m: int) -> int:
    """Upper bound on the row blocks any routing of `num_pairs` pairs can need (see module doc)."""
    return max(1, min(num_pairs, -(-num_pairs // block_m) + num_experts))


def align_by_expert(ids: torch.Tensor, num_experts: int, block_m: int) -> MoEAlignment:
    """Sort the pairs of `ids` [T, top_k] (expert ids) into per-expert blocks of `block_m` rows."""
    flat = ids.reshape(-1).to(torch.int64)
    p, dev = flat.numel(), flat.device
    nb = max_blocks(p, num_experts, block_m)
    counts = torch.zeros(num_experts, dtype=torch.int64, device=dev).index_add_(
        0, flat, torch.ones_like(flat))  # bincount would sync to size its output
    blocks = (counts + block_m - 1) // block_m
    block_end = torch.cumsum(blocks, 0)
    order = torch.argsort(flat, stable=True)
    sorted_e = flat.index_select(0, order)
    rank = torch.arange(p, device=dev) - (torch.cumsum(counts, 0) - counts).index_select(0, sorted_e)
    dest = (block_end - blocks).index_select(0, sorted_e) * block_m + rank
    sorted_pairs = torch.full((nb * block_m,), p, dtype=torch.int64, device=dev).scatter_(0, dest, order)
    owner = torch.searchsorted(block_end, torch.arange(nb, device=dev), right=True)
    block_expert = torch.where(owner < num_experts, owner, -1)
    return MoEAlignment(sorted_pairs.to(torch.int32), block_expert.to(torch.int32), p, block_m)


@dataclass
class StackedW4A16:
    """E experts' int4 weights of one projection, stacked on a leading expert dim (W4A16Weight layout):
    qweight [E, K/8, N], scales [E, K/G, N], zeros None or [E, K/G, N]."""

    qweight: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    group_size: int

    @property
    def num_experts(self) -> int:
        return int(self.qweight.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """[N, K] of one expert's float weight."""
        return int(self.qweight.shape[2]), int(self.qweight.shape[1]) * 8

    def expert(self, e: int) -> W4A16Weight:
        return W4A16Weight(self.qweight[e], self.scales[e], None if self.zeros is None else self.zeros[e],
                           self.group_size)

    @staticmethod
    def stack(weights: list[W4A16Weight]) -> "StackedW4A16":
        g = weights[0].group_size
        if any(w.group_size != g or w.shape != weights[0].shape for w in weights):
            raise ValueError("experts differ in shape or group size")
        sym = all(w.zeros is None for w in weights)
        if not sym and any(w.zeros is None for w in weights):
            raise ValueError("cannot stack symmetric with asymmetric experts")
        if weights[0].qweight.is_meta:  # shapes only: torch.stack would trace every meta input
            w0, e = weights[0], len(weights)
            def meta(t: torch.Tensor) -> torch.Tensor:
                return torch.empty((e, *t.shape), dtype=t.dtype, device="meta")

            zeros_meta = None if w0.zeros is None else meta(w0.zeros)
            return StackedW4A16(meta(w0.qweight), meta(w0.scales), None if sym else zeros_meta, g)
        zeros = None if sym else torch.stack([w.zeros for w in weights])  # type: ignore[misc]
        return StackedW4A16(torch.stack([w.qweight for w in weights]), torch.stack([w.scales for w in weights]),
                            zeros, g)


def reference_moe(x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, w13: StackedW4A16,
                  w2: StackedW4A16) -> torch.Tensor:
    """sum_j weights[t, j] * down_e(silu(gate_e x) * up_e x), e = ids[t, j], in float32 [T, H].

    w13 holds gate rows then up rows ([2I, H] per expert); w2 is [H, I]."""
    out = torch.zeros((x.shape[0], w2.shape[0]), dtype=torch.float32, device=x.device)
    xf = x.float()
    inter = w13.shape[0] // 2
    for e in torch.unique(ids).tolist():
        t, j = (ids == e).nonzero(as_tuple=True)
        h = xf[t] @ dequantize(w13.expert(e)).t()
        a = F.silu(h[:, :inter]) * h[:, inter:]
        out.index_add_(0, t, (a @ dequantize(w2.expert(e)).t()) * weights[t, j, None].float())
    return out
