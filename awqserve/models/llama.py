"""Dense Llama-family decoders: Llama (SmolLM2, Mistral-like) and Qwen2; Qwen3 builds on these blocks.

Module names follow HF checkpoints (`model.layers.N.self_attn.q_proj`, …); q/k/v and gate/up are
fused at load time through `Linear(sources=...)`.
"""
from __future__ import annotations

import logging
from types import MappingProxyType
from typing import ClassVar, Mapping

import torch
from torch import nn

from awqserve.attention.backend import AttentionBackend
from awqserve.attention.metadata import CacheSpec, ForwardContext, KVCacheSpec
from awqserve.attention.torch_backend import TorchPagedAttention
from awqserve.config.model_config import ModelConfig
from awqserve.errors import UnsupportedError
from awqserve.layers.attention import Attention, AttentionConfig
from awqserve.layers.embedding import VocabEmbedding
from awqserve.layers.linear import Linear
from awqserve.layers.mlp import GatedMLP
from awqserve.layers.norm import RMSNorm
from awqserve.layers.rotary import RotaryEmbedding, rope_config_from_model
from awqserve.models.base import CausalLM

logger = logging.getLogger(__name__)


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
    tied_linears: ClassVar[Mapping[str, str]] = MappingProxyType({"lm_head": "model.embed_tokens.weight"})
    # Attention flavour of the family: Qwen2 always has q/k/v bias (and none on o_proj); Qwen3 has a
    # per-head RMSNorm on q and k; Llama reads `attention_bias` from config.json.
    qkv_bias_always: ClassVar[bool] = False
    qk_norm: ClassVar[bool] = False

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        _check_common(config)
        self.check_config(config)
        self.model = DenseDecoder(config, self.attention_config(config), TorchPagedAttention())
        self.lm_head = Linear(config.hidden_size, config.vocab_size)

    @classmethod
    def attention_config(cls, config: ModelConfig) -> AttentionConfig:
        bias = bool(config.get("attention_bias", False))
        eps = float(config.get("rms_norm_eps", 1e-6))
        return AttentionConfig(hidden_size=config.hidden_size, num_heads=config.num_attention_heads,
                               num_kv_heads=config.num_kv_heads, head_dim=config.head_dim,
                               rope=rope_config_from_model(config), qkv_bias=bias or cls.qkv_bias_always,
                               o_bias=bias and not cls.qkv_bias_always, qk_norm_eps=eps if cls.qk_norm else None)

    @classmethod
    def check_config(cls, config: ModelConfig) -> None:
        window = config.get("sliding_window")
        if window and window < config.max_position_embeddings:
            # Mistral-v0.1 style: exact for sequences shorter than the window, full attention beyond.
            logger.warning("sliding_window=%s is not implemented; attending to the full context", window)

    def cache_spec(self) -> CacheSpec:
        c = self.config
        return CacheSpec(attention=[KVCacheSpec(c.num_kv_heads, c.head_dim) for _ in range(c.num_layers)])


class Qwen2ForCausalLM(LlamaForCausalLM):
    """Qwen2 / Qwen2.5: Llama blocks with q/k/v bias (o_proj has none)."""

    qkv_bias_always: ClassVar[bool] = True

    @classmethod
    def check_config(cls, config: ModelConfig) -> None:
        if config.get("use_sliding_window", False):
            raise UnsupportedError(f"use_sliding_window=true is not supported for {config.architecture}")
