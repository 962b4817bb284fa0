"""Decode-only paged attention: every row is one sequence's single new token.

`build_decode_meta` plans, once per step, which cache slots each sequence reads (shared by every
layer). Two implementations of one contract: write the new K/V at `slot_mapping`, then attend each
row over its own slots `kv_slots[b]` (padding repeats a slot the sequence owns and is hidden by
`kv_mask`):
- `paged_decode_eager`: index_copy + gather + torch SDPA — few, large ops for eager execution;
- `paged_decode_traceable`: for compiled steps: the KV write for inductor, then `awqserve::decode_attn`
  (CPU C kernel) where it serves the shapes, else the same attention as explicit float32 math to fuse.
The plan carries the implementation (`DecodeMeta.attend`): the runner plans eager steps, the compile
package swaps in the traceable twin for the steps it captures, so layers never ask which mode they run in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

DecodeOp = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                     "torch.Tensor | None", float], torch.Tensor]
"""(q, k, v, kv_cache, slot_mapping, kv_slots, kv_mask, scale) -> out [B, Hq, D]: write, then attend."""


@dataclass
class DecodeMeta:
    """Per-step gather plan of a decode-only batch, built once by the runner and shared by all layers.

    kv_slots [B, L] int64: flat cache slots of each sequence's positions 0..L-1 (padding repeats the
    sequence's first slot); kv_mask [B, 1, 1, L] bool: True where the key is visible; None at batch 1
    (nothing is padded); attend: the implementation every attention layer calls for this step.
    """

    kv_slots: torch.Tensor
    kv_mask: torch.Tensor | None
    attend: DecodeOp

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor,
                  slot_mapping: torch.Tensor, scale: float) -> torch.Tensor:
        return self.attend(q, k, v, kv_cache, slot_mapping, self.kv_slots, self.kv_mask, scale)


def build_decode_meta(block_tables: torch.Tensor, seq_lens: list[int], block_size: int,
                      attend: DecodeOp | None = None) -> DecodeMeta:
    """The gather plan for sequences with `seq_lens` (host ints) over their `block_tables` [B, W];
    `attend` defaults to the eager implementation."""
    dev = block_tables.device
    max_len = max(seq_lens)
    pos = torch.arange(max_len, device=dev)
    slots = block_tables[:, pos // block_size] * block_size + pos % block_size
    visible = pos[None, :] < torch.tensor(seq_lens, device=dev)[:, None]
    # Padding reads a slot the sequence owns, so uninitialised cache memory never meets the softmax
    # (0 * NaN is still NaN).
    slots = torch.where(visible, slots, slots[:, :1])
    # Batch 1 needs no mask (~35 % faster SDPA). Larger batches always carry one, even when lengths are
    # equal, so a compiled step has one graph per batch range rather than two.
    mask = None if len(seq_lens) == 1 else visible[:, None, None, :].contiguous()
    return DecodeMeta(slots.contiguous(), mask, attend or paged_decode_eager)


def attend_decode(q: torch.Tensor, kv_cache: torch.Tensor, kv_slots: torch.Tensor, kv_mask: torch.Tensor | None,
                  scale: float) -> torch.Tensor:
    """Attention of single-token rows q [B, Hq, D] over the cached keys at `kv_slots` [B, L]."""
    hkv, d = kv_cache.shape[-2], kv_cache.shape[-1]
    flat = kv_cache.view(2, -1, hkv, d)
    b, hq, _ = q.shape
    length = kv_slots.shape[1]
    kv = flat.index_select(1, kv_slots.reshape(-1)).to(q.dtype).view(2, b, length, hkv, d).transpose(2, 3)
    qg = q.reshape(b, hkv, hq // hkv, d)  # query heads grouped under their KV head
    out = F.scaled_dot_product_attention(qg, kv[0], kv[1], attn_mask=kv_mask, scale=scale)
    return out.reshape(b, hq, d)


def paged_decode_eager(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor,
                       slot_mapping: torch.Tensor, kv_slots: torch.Tensor, kv_mask: torch.Tensor | None,
                       scale: float) -> torch.Tensor:
    """Write k/v [B, Hkv, D] at `slot_mapping`, then `attend_decode`; returns [B, Hq, D]."""
    flat = kv_cache.view(2, -1, kv_cache.shape[-2], kv_cache.shape[-1])
    flat[0].index_copy_(0, slot_mapping, k.to(kv_cache.dtype))
    flat[1].index_copy_(0, slot_mapping, v.to(kv_cache.dtype))
    return attend_decode(q, kv_cache, kv_slots, kv_mask, scale)


def paged_decode_traceable(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor,
                           slot_mapping: torch.Tensor, kv_slots: torch.Tensor, kv_mask: torch.Tensor | None,
                           scale: float) -> torch.Tensor:
    """Same contract as `paged_decode_eager`, written for inductor (compiled steps only).

    The attention is the CPU kernel `awqserve::decode_attn` where `native_decode_attention` allows;
    otherwise scores, softmax and the weighted sum are explicit float32 math so inductor emits a few
    fused loops instead of calling SDPA's general kernel for a 1-row query.
    """
    hkv, d = kv_cache.shape[-2], kv_cache.shape[-1]
    flat = kv_cache.view(2, -1, hkv, d)
    # index_put on the input, not index_copy_: inductor re-inplaces the former into a scatter store but
    # functionalises the latter into a copy of the whole cache (measured 53 us vs 14.5 ms, 100 MB cache).
    flat[:, slot_mapping] = torch.stack([k, v]).to(kv_cache.dtype)
    if native_decode_attention(q, kv_cache):
        # The C kernel reads each sequence's K/V rows once, in cache order (kernels/cpu/decode_attn.c).
        # Inductor's loops for the math below read V one float at a time. Measured per step: 37.7 vs
        # 18.4 ms at 16 x 390 tokens, 9.4 vs 8.7 ms at batch 1 x 170 (docs/benchmarks/http-path-2026-12-07.md).
        out: torch.Tensor = torch.ops.awqserve.decode_attn(q, kv_cache, kv_slots, kv_mask, scale)
        return out
    b, hq, _ = q.shape
    keys = flat[0][kv_slots].float()  # [B, L, Hkv, D]
    vals = flat[1][kv_slots].float()
    qg = q.float().view(b, 1, hkv, hq // hkv, d)
    # Products and sums rather than einsum: a single query row per head is a plain reduction, which
    # inductor fuses with the gather, where einsum lowers to two extern bmm calls per layer (measured
    # at batch 1, median of 3 alternating runs: 9.2 vs 11.8 ms per step).
    scores = (qg * keys.unsqueeze(3)).sum(-1) * scale  # [B, L, Hkv, G]
    if kv_mask is not None:
        scores = scores.masked_fill(~kv_mask.view(b, -1, 1, 1), float("-inf"))
    probs = torch.softmax(scores, dim=1)
    out = (probs.unsqueeze(-1) * vals.unsqueeze(3)).sum(1)  # [B, Hkv, G, D]
    return out.reshape(b, hq, d).to(q.dtype)


def native_decode_attention(q: torch.Tensor, kv_cache: torch.Tensor) -> bool:
    """Whether `awqserve::decode_attn` (CPU, float32 cache and queries) serves this layer's shapes."""
    if q.device.type != "cpu" or q.dtype != torch.float32 or kv_cache.dtype != torch.float32:
        return False
    d, hq, hkv = q.shape[-1], q.shape[-2], kv_cache.shape[-2]
    if d % 8 or hq % hkv:
        return False
    return bool(_cpu_ops_loaded())


@torch.compiler.assume_constant_result  # type: ignore[untyped-decorator]
def _cpu_ops_loaded() -> bool:
    # Evaluated once while tracing (a constant in the graph), not traced: loading reads /proc and files.
    from awqserve.kernels.cpu import q8_kernels  # the ops library (built at setup or on first use)

    return q8_kernels.available()
