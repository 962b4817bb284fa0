"""RMS normalisation layers: plain (Llama/Qwen), zero-centred weight (Qwen3-Next), gated (GDN output)."""
from __future__ import annotations

import torch
from torch import nn


def _rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Normalise the last dim of `x` in float32 (bf16 variance is too coarse for deep stacks)."""
    xf = x.float()
    return xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)


class RMSNorm(nn.Module):
    """y = x / rms(x) * w, computed in float32 and returned in x's dtype.

    With `zero_centered=True` the stored weight is an offset and the scale is (1 + w), as in
    Qwen3-Next; the checkpoint tensor name is `weight` either way.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6, *, zero_centered: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.zero_centered = zero_centered
        init = torch.zeros(hidden_size) if zero_centered else torch.ones(hidden_size)
        self.weight = nn.Parameter(init, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.zero_centered:
            return (_rms(x, self.eps) * (1.0 + self.weight.float())).to(x.dtype)
        # Plain variant: scale after casting back, the rounding order HF Llama uses.
        return self.weight * _rms(x, self.eps).to(x.dtype)

    def forward_residual(self, x: torch.Tensor, residual: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-norm block helper: residual += x (if given), return (norm(residual), residual)."""
        if residual is not None:
            x = x + residual
        return self(x), x

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, zero_centered={self.zero_centered}"


class GatedRMSNorm(nn.Module):
    """y = rms_norm(x) * w * silu(gate), all in float32, returned in x's dtype (GDN output norm)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size), requires_grad=False)

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        y = _rms(x, self.eps) * self.weight.float()
        return (y * nn.functional.silu(gate.float())).to(x.dtype)
