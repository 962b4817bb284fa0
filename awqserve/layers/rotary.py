"""Rotary position embedding, NeoX "rotate-half" layout as in HF Llama/Qwen.

Supported scalings: default, linear, llama3, yarn. Partial rotary (`rotary_dim < head_dim`)
rotates the first `rotary_dim` channels of each head and passes the rest through.
The cos/sin table is plain state (not a buffer): it is computed on first use on the positions'
device, so construction on the meta device costs nothing and the loader has nothing to fill.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from awqserve.config.model_config import ModelConfig
from awqserve.errors import UnsupportedError

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "yarn")
_MIN_TABLE = 4096  # initial cos/sin rows


@dataclass(frozen=True)
class RopeConfig:
    """Everything that decides a rotary table. `scaling` holds the type-specific fields."""

    head_dim: int
    rotary_dim: int
    base: float
    rope_type: str = "default"
    scaling: Mapping[str, Any] | None = None
    max_position: int = 2048

    def __post_init__(self) -> None:
        if self.rope_type not in SUPPORTED_ROPE_TYPES:
            raise UnsupportedError(f"unsupported rope type {self.rope_type!r}; supported: "
                                   f"{', '.join(SUPPORTED_ROPE_TYPES)}")
        if self.rotary_dim % 2 or not 0 < self.rotary_dim <= self.head_dim:
            raise ValueError(f"rotary_dim {self.rotary_dim} must be even and in (0, head_dim={self.head_dim}]")


def rope_config_from_model(config: ModelConfig, head_dim: int | None = None) -> RopeConfig:
    """Read RoPE settings from config.json in either layout.

    transformers ≥5 writes `rope_parameters` (theta and scaling together); older checkpoints have
    top-level `rope_theta` / `partial_rotary_factor` plus `rope_scaling` (whose type key is
    `rope_type` or the legacy `type`).
    """
    hd = head_dim or config.head_dim
    params: dict[str, Any] = dict(config.get("rope_scaling") or {})
    params.update(config.get("rope_parameters") or {})
    rope_type = str(params.get("rope_type") or params.get("type") or "default")
    base = float(params.get("rope_theta") or config.get("rope_theta") or 10000.0)
    partial = float(params.get("partial_rotary_factor") or config.get("partial_rotary_factor") or 1.0)
    return RopeConfig(head_dim=hd, rotary_dim=int(hd * partial), base=base, rope_type=rope_type,
                      scaling=params, max_position=config.max_position_embeddings)


def _pos_freqs(dim: int, base: float) -> torch.Tensor:
    """base^(2i/dim) for i < dim/2: the wavelength divisors of the unscaled rotation rates."""
    return base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim)


def _llama3_inv_freq(inv_freq: torch.Tensor, s: Mapping[str, Any]) -> torch.Tensor:
    """Llama 3.1 scaling: long wavelengths divided by `factor`, short kept, a smooth blend between."""
    factor = float(s["factor"])
    low, high = float(s.get("low_freq_factor", 1.0)), float(s.get("high_freq_factor", 4.0))
    old_len = float(s["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(medium, blended, scaled)


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _yarn_inv_freq(dim: int, base: float, s: Mapping[str, Any], max_position: int) -> tuple[torch.Tensor, float]:
    """YaRN: per-frequency blend of interpolated and extrapolated rates, plus a cos/sin gain."""
    orig = float(s.get("original_max_position_embeddings") or max_position)
    factor = float(s.get("factor") or max_position / orig)
    gain = s.get("attention_factor")
    if gain is None:
        m, m_all = s.get("mscale"), s.get("mscale_all_dim")
        gain = _yarn_mscale(factor, m) / _yarn_mscale(factor, m_all) if m and m_all else _yarn_mscale(factor)
    fast, slow = float(s.get("beta_fast") or 32), float(s.get("beta_slow") or 1)

    def corr_dim(rotations: float) -> float:
        return dim * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(base))

    lo, hi = corr_dim(fast), corr_dim(slow)
    if s.get("truncate", True):
        lo, hi = math.floor(lo), math.ceil(hi)
    lo, hi = max(lo, 0), min(hi, dim - 1)
    if lo == hi:
        hi += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - lo) / (hi - lo)).clamp(0, 1)
    pos = _pos_freqs(dim, base)
    keep = 1 - ramp  # weight of the extrapolated (unscaled) rate; high frequencies keep theirs
    return 1.0 / (factor * pos) * (1 - keep) + 1.0 / pos * keep, float(gain)


def compute_inv_freq(cfg: RopeConfig) -> tuple[torch.Tensor, float]:
    """Return (inv_freq [rotary_dim/2] float32, gain applied to cos/sin)."""
    s = cfg.scaling or {}
    if cfg.rope_type == "yarn":
        return _yarn_inv_freq(cfg.rotary_dim, cfg.base, s, cfg.max_position)
    inv = 1.0 / _pos_freqs(cfg.rotary_dim, cfg.base)
    if cfg.rope_type == "linear":
        inv = inv / float(s["factor"])
    elif cfg.rope_type == "llama3":
        inv = _llama3_inv_freq(inv, s)
    return inv, 1.0


class RotaryEmbedding(nn.Module):
    """Applies RoPE to q [T, Hq, D] and k [T, Hk, D] at integer `positions` [T]."""

    def __init__(self, cfg: RopeConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.rotary_dim = cfg.rotary_dim
        self._cos: torch.Tensor | None = None  # [P, rotary_dim/2] float32
        self._sin: torch.Tensor | None = None
        # (positions tensor, cos rows, sin rows) of the current step; holds no state across steps
        # beyond one reference, replaced as soon as a new positions tensor arrives
        self._step_cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def ensure_cache(self, num_positions: int, device: torch.device) -> None:
        """Make the table cover positions [0, num_positions) on `device` (grows by powers of two)."""
        if self._cos is not None and self._cos.device == device and self._cos.shape[0] >= num_positions:
            return
        # Start small and double: a 256k-position table for a short chat would be wasted memory.
        size = max(_MIN_TABLE, 1 << max(num_positions - 1, 1).bit_length())
        inv_freq, gain = compute_inv_freq(self.cfg)
        freqs = torch.outer(torch.arange(size, dtype=torch.float32), inv_freq)
        self._cos = (freqs.cos() * gain).to(device)
        self._sin = (freqs.sin() * gain).to(device)

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                num_positions: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """`num_positions` (> every position; a host int) sizes the table without a device sync. None
        means the caller already sized it with `ensure_cache` (compiled steps: a host int would be
        a graph constant); rows are then gathered directly, with no per-step memo."""
        if num_positions is None:
            assert self._cos is not None and self._sin is not None, "ensure_cache() must run first"
            cos = self._cos.index_select(0, positions).unsqueeze(1)
            sin = self._sin.index_select(0, positions).unsqueeze(1)
        else:
            cos, sin = self._cos_sin(positions, num_positions)
        hq = q.shape[1]
        # q and k rotated in one pass: half the elementwise launches of rotating each (decode is
        # launch-bound on CPU)
        qk = self._rotate(torch.cat([q, k], dim=1), cos, sin)
        return qk[:, :hq], qk[:, hq:]

    def _cos_sin(self, positions: torch.Tensor, num_positions: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin rows [T, 1, rotary_dim/2] for `positions`; every layer of a step passes the same
        tensor, so the gather is done once per step (keyed by the tensor's identity)."""
        cached = self._step_cache
        if cached is not None and cached[0] is positions:
            return cached[1], cached[2]
        self.ensure_cache(num_positions, positions.device)
        cos = self._cos.index_select(0, positions).unsqueeze(1)  # type: ignore[union-attr]
        sin = self._sin.index_select(0, positions).unsqueeze(1)  # type: ignore[union-attr]
        self._step_cache = (positions, cos, sin)
        return cos, sin

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        r, half = self.rotary_dim, self.rotary_dim // 2
        xf = x[..., :r].float()
        x1, x2 = xf[..., :half], xf[..., half:]
        out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)
        return out if r == x.shape[-1] else torch.cat([out, x[..., r:]], dim=-1)

    def extra_repr(self) -> str:
        c = self.cfg
        return f"type={c.rope_type}, rotary_dim={c.rotary_dim}/{c.head_dim}, base={c.base}"
