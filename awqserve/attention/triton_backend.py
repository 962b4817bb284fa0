"""CUDA attention backend: Triton paged kernels (kernels/triton/paged_attention.py).

Decode-only steps run the split-K decode kernel (GQA group per program, block tables); any step with
a prefill row runs the varlen prefill kernel over every sequence of the step (a decode row is a
query of length 1 there). New K/V are written into the paged cache first, so both kernels read every
key from the cache. Works on the step's device tensors only: no host sync, so a decode step can be
captured in a CUDA graph (the split count is fixed).
"""
from __future__ import annotations

import torch

from awqserve.attention.backend import AttentionBackend, write_kv
from awqserve.attention.metadata import ForwardContext

DECODE_SPLITS = 8
"""Key-range splits per (sequence, KV head) in decode (fixed, so graphs replay at any length)."""


class TritonPagedAttention(AttentionBackend):
    """Implements `AttentionBackend.forward` with the Triton kernels; q/k/v on a CUDA device (or any
    device under `TRITON_INTERPRET=1`, which the CPU tests use)."""

    def __init__(self, decode_splits: int = DECODE_SPLITS) -> None:
        self.decode_splits = decode_splits

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor,
                ctx: ForwardContext, scale: float) -> torch.Tensor:
        from awqserve.kernels.triton.paged_attention import paged_decode, paged_prefill

        write_kv(k, v, kv_cache, ctx.slot_mapping)
        if ctx.decode is not None or (ctx.query_lens_cpu and max(ctx.query_lens_cpu) == 1):
            return paged_decode(q, kv_cache, ctx.block_tables, ctx.seq_lens, scale, splits=self.decode_splits)
        max_q = max(ctx.query_lens_cpu) if ctx.query_lens_cpu else int(q.shape[0])
        return paged_prefill(q, kv_cache, ctx.block_tables, ctx.query_start_loc, ctx.context_lens, max_q, scale)
