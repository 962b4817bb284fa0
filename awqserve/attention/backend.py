"""Attention backend interface: write new K/V into the paged cache, attend causally over it."""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from awqserve.attention.metadata import ForwardContext


class AttentionBackend(ABC):
    """One implementation per device family (CPU reference, CUDA).

    Contract of `forward`:
    - q [T, Hq, D], k/v [T, Hkv, D] are the step's new tokens in the flat layout of `ctx`;
      Hq is a multiple of Hkv (GQA).
    - First writes k/v into `kv_cache` ([2, num_blocks, block_size, Hkv, D]) at `ctx.slot_mapping`.
    - Then each new token t of sequence b attends to positions 0..positions[t] of b (cached
      context plus the new tokens up to itself), with softmax scale `scale`.
    - Returns [T, Hq, D] in q's dtype. Never reads slots of other sequences.
    """

    @abstractmethod
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor,
                ctx: ForwardContext, scale: float) -> torch.Tensor: ...


def write_kv(k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """Scatter the new tokens' K/V into the paged cache (shared by backends)."""
    flat = kv_cache.view(2, -1, kv_cache.shape[-2], kv_cache.shape[-1])
    flat[0].index_copy_(0, slot_mapping, k.to(kv_cache.dtype))
    flat[1].index_copy_(0, slot_mapping, v.to(kv_cache.dtype))
