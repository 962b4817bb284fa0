"""The numerical core of AWQ (Lin et al., arXiv 2306.00978): fake quantization, scale and clip search.

Conventions: W is [N, K] (nn.Linear layout), X is [T, K] (tokens x input channels). Quantization is
group-wise along K with the formulas of AWQ_FORMATS.md §1 (the same as quant.packing.quantize_rtn),
so the error minimised here is the error of the checkpoint that is finally written.

- Scale search: s = mean|x|^alpha, normalised by sqrt(max(s) * min(s)), for alpha on a grid
  0, 1/n, …, (n-1)/n; the loss is the output MSE of Q(W diag(s)) (diag(s)^-1 X) against W X on a
  token subsample. alpha = 0 is plain round-to-nearest, so the chosen scale never does worse than
  RTN on the tokens searched.
- Clip search: per (row, group), shrink the quantization range by r in 1.0, 0.95, …, 0.55 and keep
  the r with the least output error of that group's partial dot products. The per-group error
  e H_g e^T uses the group's Gram matrix H_g = X_g^T X_g, so every calibration token counts at
  the cost of a few small matmuls.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class QuantSpec:
    """Group-wise int4 scheme: `group_size` inputs share a scale (and a zero point if asymmetric)."""

    group_size: int
    symmetric: bool

    def groups(self, w: torch.Tensor) -> torch.Tensor:
        n, k = w.shape
        if k % self.group_size:
            raise ValueError(f"group size {self.group_size} does not divide in_features {k}")
        return w.reshape(n, k // self.group_size, self.group_size)


def group_range(wg: torch.Tensor, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) per group of a grouped weight [N, ng, G], as keepdim tensors [N, ng, 1]."""
    if symmetric:
        hi = torch.maximum(wg.amax(-1, keepdim=True), -wg.amin(-1, keepdim=True))
        return -hi, hi
    return wg.amin(-1, keepdim=True), wg.amax(-1, keepdim=True)


def fake_quantize_groups(wg: torch.Tensor, symmetric: bool, lo: torch.Tensor | None = None,
                         hi: torch.Tensor | None = None) -> torch.Tensor:
    """Quantize-dequantize grouped weights [N, ng, G]; `lo`/`hi` (clipped ranges) default to min/max.

    Values outside [lo, hi] are clamped by the int4 range itself (that is what clipping means).
    """
    if lo is None or hi is None:
        lo, hi = group_range(wg, symmetric)
    if symmetric:
        s = hi / 7.5
        s = torch.where(s > 0, s, torch.ones_like(s))
        return (wg / s).round_().clamp_(-8, 7).mul_(s)
    flat = hi == lo
    lo = torch.where(flat, lo.clamp(max=0.0), lo)
    hi = torch.where(flat, hi.clamp(min=0.0), hi)
    s = (hi - lo) / 15
    s = torch.where(s > 0, s, torch.ones_like(s))
    zp = (-8 - lo / s).round_().clamp_(-8, 7)
    return (wg / s).add_(zp).round_().clamp_(-8, 7).sub_(zp).mul_(s)


def fake_quantize(w: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Quantize-dequantize W [N, K] with plain min/max ranges (round-to-nearest)."""
    return fake_quantize_groups(spec.groups(w), spec.symmetric).reshape(w.shape)


def output_mse(w_q: torch.Tensor, x: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean squared error of x @ w_q^T against the reference output `ref`."""
    return float((x @ w_q.t()).sub_(ref).pow_(2).mean())


@dataclass(frozen=True)
class ScaleResult:
    """Outcome of one scale search: the scale, its alpha, and the losses at alpha = 0 (RTN) and best."""

    scales: torch.Tensor
    alpha: float
    rtn_loss: float
    best_loss: float


def normalised_scales(x_mean: torch.Tensor, alpha: float) -> torch.Tensor:
    s = x_mean.pow(alpha).clamp(min=1e-4)
    return s / (s.max() * s.min()).sqrt()


def search_scale(w: torch.Tensor, x_mean: torch.Tensor, x: torch.Tensor, spec: QuantSpec,
                 n_grid: int = 20) -> ScaleResult:
    """Best per-input-channel scale for the linears stacked in W [N, K] that all read X [T, K].

    `x_mean` is mean|x| per channel over all calibration tokens; `x` is the token subsample on
    which the loss is measured. Ties keep the smaller alpha (grid order), so results are stable.
    """
    ref = x @ w.t()
    best: ScaleResult | None = None
    rtn_loss = 0.0
    for i in range(n_grid):
        alpha = i / n_grid
        s = normalised_scales(x_mean, alpha)
        loss = output_mse(fake_quantize(w * s, spec), x / s, ref)
        if i == 0:
            rtn_loss = loss
        if best is None or loss < best.best_loss:
            best = ScaleResult(s, alpha, rtn_loss, loss)
    assert best is not None
    return ScaleResult(best.scales, best.alpha, rtn_loss, best.best_loss)


def group_gram(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """Per-group Gram matrices [ng, G, G] of X [T, K]: H_g = X_g^T X_g / T."""
    t, k = x.shape
    xg = x.reshape(t, k // group_size, group_size).transpose(0, 1)  # [ng, T, G]
    return (xg.transpose(1, 2) @ xg) / t


def group_errors(err: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """Per (row, group) output error e_g H_g e_g^T for weight errors err [N, ng, G] -> [N, ng]."""
    e = err.transpose(0, 1)  # [ng, N, G]
    return ((e @ gram) * e).sum(-1).transpose(0, 1)


def clip_ratios(steps: int, step: float) -> torch.Tensor:
    """The shrink ratios tried, 1.0, 1 - step, ...: float32 values equal to the Python floats the
    search multiplies by, so ranges rebuilt from a chosen index are bit-identical."""
    return torch.tensor([1.0 - i * step for i in range(steps)], dtype=torch.float32)


def clip_range(lo0: torch.Tensor, hi0: torch.Tensor, r: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """Range [lo0, hi0] shrunk towards zero by ratio r (never past the data)."""
    return torch.where(lo0 < 0, lo0 * r, lo0), torch.where(hi0 > 0, hi0 * r, hi0)


CLIP_STEP = 0.05
"""Shrink-ratio step of the clip search (AutoAWQ's)."""


def chosen_ranges(w: torch.Tensor, choice: torch.Tensor, spec: QuantSpec, steps: int,
                  step: float = CLIP_STEP) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranges (lo, hi) [N, ng, 1] of W's groups shrunk by ratio index `choice` [N, ng] (0 = unclipped)."""
    lo0, hi0 = group_range(spec.groups(w), spec.symmetric)
    return clip_range(lo0, hi0, clip_ratios(steps, step)[choice.long()].unsqueeze(-1))


def search_clip(w: torch.Tensor, gram: torch.Tensor, spec: QuantSpec, steps: int = 10,
                step: float = CLIP_STEP) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped ranges (lo, hi) [N, ng, 1] minimising each group's output error.

    Ratios tried: 1.0, 1 - step, …, 1 - (steps - 1) * step (AutoAWQ's 1.0 -> 0.55 by default).
    """
    return chosen_ranges(w, search_clip_choice(w, gram, spec, steps, step), spec, steps, step)


def search_clip_choice(w: torch.Tensor, gram: torch.Tensor, spec: QuantSpec, steps: int = 10,
                       step: float = CLIP_STEP) -> torch.Tensor:
    """Index (uint8 [N, ng]) of the best ratio per (row, group): what `search_clip` applies."""
    wg = spec.groups(w)
    lo0, hi0 = group_range(wg, spec.symmetric)
    best_err = torch.full(wg.shape[:2], float("inf"), dtype=w.dtype)
    best = torch.zeros(wg.shape[:2], dtype=torch.uint8)
    for i in range(steps):
        # shrink towards zero, never past the data: clamping W to [lo, hi] then has exactly that
        # range, so the final min/max quantization of the clamped weight reproduces this search
        lo, hi = clip_range(lo0, hi0, 1.0 - i * step)
        # quantize the clamped weight, as the final pass will: clamped values sit exactly on the
        # range ends, which float rounding may map to a different level than values beyond them
        clamped = torch.maximum(torch.minimum(wg, hi), lo)
        err = group_errors(fake_quantize_groups(clamped, spec.symmetric, lo, hi).sub_(wg), gram)
        best = torch.where(err < best_err, torch.full_like(best, i), best)
        best_err = torch.minimum(err, best_err)
    return best


def apply_clip(w: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """W with every group clamped to its [lo, hi] range (the input to final quantization)."""
    wg = spec.groups(w)
    return torch.maximum(torch.minimum(wg, hi), lo).reshape(w.shape)
