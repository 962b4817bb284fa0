"""The SwiGLU MLP every supported decoder uses (dense blocks, MoE experts, shared experts)."""
from __future__ import annotations

import torch
from torch import nn

from awqserve.layers.activation import SiluAndMul
from awqserve.layers.linear import Linear


class GatedMLP(nn.Module):
    """down(silu(gate(x)) * up(x)); gate|up are read as one Linear from `gate_proj` and `up_proj`."""

    def __init__(self, hidden_size: int, intermediate_size: int, *, bias: bool = False) -> None:
        super().__init__()
        self.gate_up_proj = Linear(hidden_size, [intermediate_size, intermediate_size], bias=bias,
                                   sources=["gate_proj", "up_proj"])
        self.down_proj = Linear(intermediate_size, hidden_size, bias=bias)
        self.act = SiluAndMul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.down_proj(self.act(self.gate_up_proj(x)))
        return out
