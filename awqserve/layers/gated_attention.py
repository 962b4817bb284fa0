"""Qwen3-Next gated full attention: the shared `Attention` layer with an output gate.

`q_proj` emits [query | gate] per head (viewed [T, heads, 2*head_dim] and split in halves), q and k
get zero-centred per-head RMSNorm before a partial NeoX RoPE (the first `partial_rotary_factor *
head_dim` channels), and the attention output is multiplied by sigmoid(gate) before `o_proj`. All of
that is implemented by `layers/attention.py` behind `AttentionConfig` flags; this module only maps
config.json onto those flags so the mapping lives in one place.
"""
from __future__ import annotations

from dataclasses import replace

from awqserve.config.model_config import ModelConfig
from awqserve.layers.attention import AttentionConfig
from awqserve.layers.rotary import rope_config_from_model

DEFAULT_PARTIAL_ROTARY = 0.25
"""transformers' Qwen3-Next default when config.json names no partial_rotary_factor."""


def gated_attention_config(config: ModelConfig) -> AttentionConfig:
    """AttentionConfig of a Qwen3-Next full-attention layer (rotary dim = head_dim * partial factor)."""
    bias = bool(config.get("attention_bias", False))
    rope = rope_config_from_model(config)
    named = (config.get("rope_parameters") or {}).get("partial_rotary_factor") or config.get("partial_rotary_factor")
    if named is None:
        rope = replace(rope, rotary_dim=int(config.head_dim * DEFAULT_PARTIAL_ROTARY))
    return AttentionConfig(hidden_size=config.hidden_size, num_heads=config.num_attention_heads,
                           num_kv_heads=config.num_kv_heads, head_dim=config.head_dim,
                           rope=rope, qkv_bias=bias, o_bias=bias,
                           qk_norm_eps=float(config.get("rms_norm_eps", 1e-6)), zero_centered_norm=True,
                           output_gate=True)
