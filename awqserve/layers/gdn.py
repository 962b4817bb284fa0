"""Gated DeltaNet token mixer (Qwen3-Next `linear_attn`), over the engine's per-sequence state slots.

Checkpoint modules (relative to the layer): `in_proj_qkvz` [2*Dk + 2*Dv, H], `in_proj_ba` [2*HV, H],
`conv1d.weight` [Dk*2 + Dv, 1, W], `dt_bias` [HV], `A_log` [HV], `norm.weight` [V], `out_proj` [H, Dv]
(Dk = Hk*K, Dv = HV*V). Both projections are grouped per key head: qkvz rows of key head h are
[q K | k K | v r*V | z r*V] and ba rows [b r | a r] with r = HV / Hk; they are de-interleaved here.

State contract (see attention/metadata.py): row `ctx.state_slots[b]` of `ctx.conv_states[i]`
([slots, conv_dim, W-1], the last W-1 conv inputs) and of `ctx.recurrent_states[i]`
([slots, HV, K, V], float32) belongs to sequence b. A sequence with `context_lens[b] == 0` starts
from zeros whatever its slot holds; otherwise it continues from the stored state. Both are
overwritten with the state after this step's tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from awqserve.attention.metadata import ForwardContext, StateSpec
from awqserve.config.model_config import ModelConfig
from awqserve.layers.gdn_ops import causal_conv1d, gated_delta_rule
from awqserve.layers.linear import Linear
from awqserve.layers.norm import GatedRMSNorm


@dataclass(frozen=True)
class GDNConfig:
    hidden_size: int
    num_k_heads: int
    num_v_heads: int
    head_k_dim: int
    head_v_dim: int
    conv_kernel: int
    eps: float

    @classmethod
    def from_model(cls, config: ModelConfig) -> "GDNConfig":
        return cls(hidden_size=config.hidden_size,
                   num_k_heads=int(config.get("linear_num_key_heads", 16)),
                   num_v_heads=int(config.get("linear_num_value_heads", 32)),
                   head_k_dim=int(config.get("linear_key_head_dim", 128)),
                   head_v_dim=int(config.get("linear_value_head_dim", 128)),
                   conv_kernel=int(config.get("linear_conv_kernel_dim", 4)),
                   eps=float(config.get("rms_norm_eps", 1e-6)))

    def __post_init__(self) -> None:
        if self.num_v_heads % self.num_k_heads:
            raise ValueError(f"linear_num_value_heads {self.num_v_heads} is not a multiple of "
                             f"linear_num_key_heads {self.num_k_heads}")

    @property
    def key_dim(self) -> int:
        return self.num_k_heads * self.head_k_dim

    @property
    def value_dim(self) -> int:
        return self.num_v_heads * self.head_v_dim

    @property
    def conv_dim(self) -> int:
        return 2 * self.key_dim + self.value_dim

    def state_spec(self) -> StateSpec:
        return StateSpec(conv_shape=(self.conv_dim, self.conv_kernel - 1),
                         recurrent_shape=(self.num_v_heads, self.head_k_dim, self.head_v_dim))


class _ConvWeight(nn.Module):
    """Holds `conv1d.weight` [C, 1, W] under the checkpoint's name (a depthwise Conv1d's weight)."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels, 1, width), requires_grad=False)


class GatedDeltaNet(nn.Module):
    """`state_index` is this layer's index into `ctx.conv_states` / `ctx.recurrent_states`."""

    def __init__(self, cfg: GDNConfig, state_index: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.state_index = state_index
        self.in_proj_qkvz = Linear(cfg.hidden_size, 2 * cfg.key_dim + 2 * cfg.value_dim)
        self.in_proj_ba = Linear(cfg.hidden_size, 2 * cfg.num_v_heads)
        self.conv1d = _ConvWeight(cfg.conv_dim, cfg.conv_kernel)
        self.dt_bias = nn.Parameter(torch.empty(cfg.num_v_heads), requires_grad=False)
        self.A_log = nn.Parameter(torch.empty(cfg.num_v_heads), requires_grad=False)
        self.norm = GatedRMSNorm(cfg.head_v_dim, cfg.eps)
        self.out_proj = Linear(cfg.value_dim, cfg.hidden_size)

    def _split(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project and de-interleave: (conv input [T, conv_dim] as q|k|v, z [T, HV, V], b, a [T, HV])."""
        c, t = self.cfg, hidden.shape[0]
        r = c.num_v_heads // c.num_k_heads
        qkvz = self.in_proj_qkvz(hidden).view(t, c.num_k_heads, -1)
        q, k, v, z = qkvz.split([c.head_k_dim, c.head_k_dim, r * c.head_v_dim, r * c.head_v_dim], dim=-1)
        b, a = self.in_proj_ba(hidden).view(t, c.num_k_heads, 2 * r).split([r, r], dim=-1)
        mixed = torch.cat([q.reshape(t, -1), k.reshape(t, -1), v.reshape(t, -1)], dim=-1)
        return mixed, z.reshape(t, c.num_v_heads, c.head_v_dim), b.reshape(t, -1), a.reshape(t, -1)

    def forward(self, hidden: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        c, t = self.cfg, hidden.shape[0]
        cu = [0]
        for n in ctx.query_lens_cpu:
            cu.append(cu[-1] + n)
        slots = ctx.state_slots
        if slots is None:
            raise RuntimeError("a hybrid model's forward needs ctx.state_slots")
        conv_cache = ctx.conv_states[self.state_index]
        rec_cache = ctx.recurrent_states[self.state_index]
        fresh = _fresh_mask(ctx)

        mixed, z, b, a = self._split(hidden)
        conv0 = _initial(conv_cache, slots, fresh)
        mixed, conv1 = causal_conv1d(mixed, self.conv1d.weight[:, 0], cu, conv0)
        conv_cache.index_copy_(0, slots, conv1.to(conv_cache.dtype))
        mixed = F.silu(mixed)
        q, k, v = mixed.split([c.key_dim, c.key_dim, c.value_dim], dim=-1)

        beta = torch.sigmoid(b.float())
        g = -self.A_log.float().exp() * F.softplus(a.float() + self.dt_bias.float())
        rec0 = _initial(rec_cache, slots, fresh)
        o, rec1 = gated_delta_rule(q.reshape(t, c.num_k_heads, c.head_k_dim), k.reshape(t, c.num_k_heads, c.head_k_dim),
                                   v.reshape(t, c.num_v_heads, c.head_v_dim), g, beta, cu_seqlens=cu,
                                   initial_state=rec0.float())
        rec_cache.index_copy_(0, slots, rec1.to(rec_cache.dtype))
        o = self.norm(o, z)
        return self.out_proj(o.reshape(t, c.value_dim))


def _fresh_mask(ctx: ForwardContext) -> torch.Tensor | None:
    """Bool [B] of sequences starting from an empty state, or None when every sequence continues."""
    if all(n > 0 for n in ctx.context_lens_cpu):
        return None
    return ctx.context_lens == 0


def _initial(cache: torch.Tensor, slots: torch.Tensor, fresh: torch.Tensor | None) -> torch.Tensor:
    """The batch's stored states (a copy), zeroed for fresh sequences (their slot may hold stale data)."""
    state = cache.index_select(0, slots)
    if fresh is None:
        return state
    keep = (~fresh).view(-1, *([1] * (state.dim() - 1)))
    return torch.where(keep, state, torch.zeros((), dtype=state.dtype, device=state.device))
