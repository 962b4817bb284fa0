"""Self-attention layer: fused qkv projection -> (q/k norm) -> RoPE -> paged backend -> o_proj."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from awqserve.attention.backend import AttentionBackend
from awqserve.attention.metadata import ForwardContext
from awqserve.layers.linear import Linear
from awqserve.layers.norm import RMSNorm
from awqserve.layers.rotary import RopeConfig, RotaryEmbedding


@dataclass(frozen=True)
class AttentionConfig:
    """Shape and options of one attention layer.

    `qk_norm_eps` set: per-head RMSNorm of q and k before RoPE (Qwen3), zero-centred when
    `zero_centered_norm` (Qwen3-Next). `output_gate`: q_proj emits [q | gate] per head and the
    attention output is multiplied by sigmoid(gate) before o_proj (Qwen3-Next).
    """

    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope: RopeConfig
    qkv_bias: bool = False
    o_bias: bool = False
    qk_norm_eps: float | None = None
    zero_centered_norm: bool = False
    output_gate: bool = False

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")


class Attention(nn.Module):
    """Reads checkpoint modules `q_proj`, `k_proj`, `v_proj`, `o_proj` (+ `q_norm`, `k_norm`).

    `cache_index` is this layer's index into `ctx.kv_caches` (the model's attention-layer number).
    `backend` is shared by all layers of a model; the model swaps it for a device-specific one.
    `rotary` may be shared too (one cos/sin table per model instead of one per layer).
    """

    def __init__(self, cfg: AttentionConfig, cache_index: int, backend: AttentionBackend,
                 rotary: RotaryEmbedding | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.cache_index = cache_index
        self.backend = backend
        self.scale = cfg.head_dim ** -0.5
        self.q_size = cfg.num_heads * cfg.head_dim * (2 if cfg.output_gate else 1)
        self.kv_size = cfg.num_kv_heads * cfg.head_dim
        self.qkv_proj = Linear(cfg.hidden_size, [self.q_size, self.kv_size, self.kv_size], bias=cfg.qkv_bias,
                               sources=["q_proj", "k_proj", "v_proj"])
        self.o_proj = Linear(cfg.num_heads * cfg.head_dim, cfg.hidden_size, bias=cfg.o_bias)
        self.q_norm: RMSNorm | None = None
        self.k_norm: RMSNorm | None = None
        if cfg.qk_norm_eps is not None:
            self.q_norm = RMSNorm(cfg.head_dim, cfg.qk_norm_eps, zero_centered=cfg.zero_centered_norm)
            self.k_norm = RMSNorm(cfg.head_dim, cfg.qk_norm_eps, zero_centered=cfg.zero_centered_norm)
        self.rotary = rotary if rotary is not None else RotaryEmbedding(cfg.rope)

    def forward(self, hidden: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        cfg = self.cfg
        t = hidden.shape[0]
        q, k, v = self.qkv_proj(hidden).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        gate = None
        if cfg.output_gate:
            q, gate = q.view(t, cfg.num_heads, 2 * cfg.head_dim).chunk(2, dim=-1)
        q = q.reshape(t, cfg.num_heads, cfg.head_dim)
        k = k.reshape(t, cfg.num_kv_heads, cfg.head_dim)
        v = v.reshape(t, cfg.num_kv_heads, cfg.head_dim)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = self.rotary(ctx.positions, q, k, ctx.max_seq_len)
        out = self.backend.forward(q, k, v, ctx.kv_caches[self.cache_index], ctx, self.scale)
        out = out.reshape(t, cfg.num_heads * cfg.head_dim)
        if gate is not None:
            out = out * torch.sigmoid(gate.reshape(t, -1))
        projected: torch.Tensor = self.o_proj(out)
        return projected
