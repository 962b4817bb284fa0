"""Activation helpers for gated MLPs."""
from __future__ import annotations

import torch
from torch import nn


class SiluAndMul(nn.Module):
    """x [..., 2I] = [gate | up] -> silu(gate) * up [..., I] (the fused gate_up projection's output)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = x.chunk(2, dim=-1)
        return nn.functional.silu(gate) * up
