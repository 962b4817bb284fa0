"""Qwen3 dense decoder: Llama blocks with per-head RMSNorm on q and k (before RoPE), no qkv bias."""
from __future__ import annotations

from dataclasses import replace

from awqserve.config.model_config import ModelConfig
from awqserve.layers.attention import AttentionConfig
from awqserve.models.llama import Qwen2ForCausalLM


class Qwen3ForCausalLM(Qwen2ForCausalLM):
    """`head_dim` comes from config.json (it need not equal hidden_size / num_heads)."""

    @classmethod
    def attention_config(cls, config: ModelConfig) -> AttentionConfig:
        base = super(Qwen2ForCausalLM, cls).attention_config(config)
        return replace(base, qk_norm_eps=float(config.get("rms_norm_eps", 1e-6)))
