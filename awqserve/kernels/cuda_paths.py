"""Switch a loaded model onto its CUDA paths (called once by the loaders after kernels are built).

On a CUDA device with Triton installed: every attention layer's backend becomes
`TritonPagedAttention` (one shared instance), and int4 MoE experts on the Triton W4A16 kernel are
stacked for the fused-MoE kernels (`layers.moe.fuse_int4_experts`, which also runs on "meta" so the
dummy loader's byte accounting sees the GPU layout). GDN needs nothing here: `layers.gdn_ops` picks
fla-core's kernels on CUDA by itself when `fla` is importable, else its torch forms. On the CPU this
changes nothing: the CPU paths (and their recorded outputs) stay exactly as they are.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from awqserve.layers.attention import Attention
from awqserve.layers.moe import fuse_int4_experts


@dataclass(frozen=True)
class CudaPaths:
    """What `prepare_for_device` switched: attention layers on Triton, MoE layers fused."""

    attention_layers: int = 0
    fused_moe_layers: int = 0


def prepare_for_device(model: nn.Module, device: torch.device) -> CudaPaths:
    """Select the Triton paths for `model` on `device` (see module doc); returns what changed."""
    from awqserve.kernels.w4a16_kernel import triton_available

    if device.type not in ("cuda", "meta"):
        return CudaPaths()
    fused = fuse_int4_experts(model)
    attention = 0
    if device.type == "cuda" and triton_available():
        from awqserve.attention.triton_backend import TritonPagedAttention

        backend = TritonPagedAttention()
        for layer in model.modules():
            if isinstance(layer, Attention):
                layer.backend = backend
                attention += 1
    return CudaPaths(attention, fused)
