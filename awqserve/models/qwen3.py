"""Qwen3 dense decoder: Llama blocks with per-head RMSNorm on q and k (before RoPE), no qkv bias."""
from __future__ import annotations

from typing import ClassVar

from awqserve.models.llama import Qwen2ForCausalLM


class Qwen3ForCausalLM(Qwen2ForCausalLM):
    """`head_dim` comes from config.json (it need not equal hidden_size / num_heads); q/k/v bias follows
    `attention_bias` (false in released checkpoints), unlike Qwen2's fixed bias."""

    qkv_bias_always: ClassVar[bool] = False
    qk_norm: ClassVar[bool] = True
