"""Dense Llama-family decoders: Llama (SmolLM2, Mistral-like) and Qwen2; Qwen3 builds on these blocks.

Module names follow HF checkpoints (`model.layers.N.self_attn.q_proj`, …); q/k/v and gate/up are
fused at load time through `Linear(sources=...)`.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import ClassVar

import torch
from torch import nn

from awqserve.attention.backend import AttentionBackend
from awqserve.attention.metadata import CacheSpec, ForwardContext, KVCacheSpec
from awqserve.attention.torch_backend import TorchPagedAttention
from awqserve.config.model_config import ModelConfig
from awqserve.errors import UnsupportedError
from awqserve.layers.activation import SiluAndMul
from awqserve.layers.attention import Attention, AttentionConfig
from awqserve.layers.embedding import VocabEmbedding
from awqserve.layers.linear import Linear
from awqserve.layers.norm import RMSNorm
from awqserve.layers.rotary import RotaryEmbedding, rope_config_from_model
from awqserve.models.base import CausalLM

logger = logging.getLogger(__name__)


class GatedMLP(nn.Module):
    """down(silu(gate(x)) * up(x)) with gate|up fused into one projection."""

    def __init__(self, hidden_size: int, intermediate_size: int, *, bias: bool = False) -> None:
        super().__init__()
        self.gate_up_proj = Linear(hidden_size, [intermediate_size, intermediate_size], bias=bias,
                                   sources=["gate_proj", "up_proj"])
        self.down_proj = Linear(intermediate_size, hidden_size, bias=bias)
        self.act = SiluAndMul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_up_proj(x)))


class DecoderLayer(nn.Module):
    """Pre-norm block; the residual stream is carried separately so each norm can fuse the add."""

    def __init__(self, config: ModelConfig, attn: AttentionConfig, index: int, backend: AttentionBackend,
                 rotary: RotaryEmbedding) -> None:
        super().__init__()
        eps = float(config.get("rms_norm_eps", 1e-6))
        self.input_layernorm = RMSNorm(config.hidden_size, eps)
        self.self_attn = Attention(attn, cache_index=index, backend=backend, rotary=rotary)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps)
        self.mlp = GatedMLP(config.hidden_size, int(config.require("intermediate_size")),
                            bias=bool(config.get("mlp_bias", False)))

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor | None,
                ctx: ForwardContext) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, residual = self.input_layernorm.forward_residual(hidden, residual)
        hidden = self.self_attn(hidden, ctx)
        hidden, residual = self.post_attention_layernorm.forward_residual(hidden, residual)
        return self.mlp(hidden), residual


class DenseDecoder(nn.Module):
    """`model.*` of a dense checkpoint: embed_tokens, layers, final norm."""

    def __init__(self, config: ModelConfig, attn: AttentionConfig, backend: AttentionBackend) -> None:
        super().__init__()
        self.embed_tokens = VocabEmbedding(config.vocab_size, config.hidden_size)
        rotary = RotaryEmbedding(attn.rope)  # one cos/sin table shared by every layer
        self.layers = nn.ModuleList(DecoderLayer(config, attn, i, backend, rotary) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, float(config.get("rms_norm_eps", 1e-6)))

    def forward(self, input_ids: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        hidden, residual = self.embed_tokens(input_ids), None
        for layer in self.layers:
            hidden, residual = layer(hidden, residual, ctx)
        return self.norm.forward_residual(hidden, residual)[0]


def _check_common(config: ModelConfig) -> None:
    act = config.get("hidden_act", "silu")
    if act != "silu":
        raise UnsupportedError(f"unsupported hidden_act {act!r} for {config.architecture} (only 'silu')")


class LlamaForCausalLM(CausalLM):
    """Llama / SmolLM2 / Mistral-like dense decoder."""

    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = (r".*rotary_emb\.inv_freq",)
    compilable_decode: ClassVar[bool] = True
    # Linear name -> checkpoint tensor it reuses when config.tie_word_embeddings and the checkpoint
    # has no weight of its own (read by the loader).
    tied_linears: ClassVar[dict[str, str]] = {"lm_head": "model.embed_tokens.weight"}

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        _check_common(config)
        self.check_config(config)
        self.model = DenseDecoder(config, self.attention_config(config), TorchPagedAttention())
        self.lm_head = Linear(config.hidden_size, config.vocab_size)

    @classmethod
    def attention_config(cls, config: ModelConfig) -> AttentionConfig:
        bias = bool(config.get("attention_bias", False))
        return AttentionConfig(hidden_size=config.hidden_size, num_heads=config.num_attention_heads,
                               num_kv_heads=config.num_kv_heads, head_dim=config.head_dim,
                               rope=rope_config_from_model(config), qkv_bias=bias, o_bias=bias)

    @classmethod
    def check_config(cls, config: ModelConfig) -> None:
        window = config.get("sliding_window")
        if window and window < config.max_position_embeddings:
            # Mistral-v0.1 style: exact for sequences shorter than the window, full attention beyond.
            logger.warning("sliding_window=%s is not implemented; attending to the full context", window)

    def cache_spec(self) -> CacheSpec:
        c = self.config
        return CacheSpec(attention=[KVCacheSpec(c.num_kv_heads, c.head_dim) for _ in range(c.num_layers)])

    def set_attention_backend(self, backend: AttentionBackend) -> None:
        """Route every attention layer through `backend` (one shared instance per model)."""
        for module in self.modules():
            if isinstance(module, Attention):
                module.backend = backend


class Qwen2ForCausalLM(LlamaForCausalLM):
    """Qwen2 / Qwen2.5: Llama blocks with q/k/v bias (o_proj has none)."""

    @classmethod
    def attention_config(cls, config: ModelConfig) -> AttentionConfig:
        base = super().attention_config(config)
        return replace(base, qkv_bias=True, o_bias=False)

    @classmethod
    def check_config(cls, config: ModelConfig) -> None:
        if config.get("use_sliding_window", False):
            raise UnsupportedError(f"use_sliding_window=true is not supported for {config.architecture}")
