"""Qwen3-Next (model_type `qwen3_next`): hybrid Gated DeltaNet / gated attention decoder with sparse MoE.

Layer i mixes tokens with full attention when `layer_types[i] == "full_attention"` (default: every
`full_attention_interval`-th layer), else with Gated DeltaNet. Every norm outside the GDN output norm
is zero-centred (scale 1 + w). MLPs are sparse MoE blocks with a gated shared expert, except layers in
`mlp_only_layers` or off the `decoder_sparse_step` grid, which get a dense SwiGLU. The MTP head
(`mtp.*`) is not used. Attention layers read paged KV; GDN layers read per-sequence state slots, so
`cache_spec()` lists both and the engine must provide both (see attention/metadata.py).
"""
from __future__ import annotations

from types import MappingProxyType
from typing import ClassVar, Mapping

import torch
from torch import nn

from awqserve.attention.backend import AttentionBackend
from awqserve.attention.metadata import CacheSpec, ForwardContext, KVCacheSpec
from awqserve.attention.torch_backend import TorchPagedAttention
from awqserve.config.model_config import ModelConfig
from awqserve.errors import UnsupportedError
from awqserve.layers.attention import Attention
from awqserve.layers.embedding import VocabEmbedding
from awqserve.layers.gated_attention import gated_attention_config
from awqserve.layers.gdn import GatedDeltaNet, GDNConfig
from awqserve.layers.linear import Linear
from awqserve.layers.mlp import GatedMLP
from awqserve.layers.moe import MoEConfig, SparseMoE, detect_expert_layout
from awqserve.layers.norm import RMSNorm
from awqserve.models.base import CausalLM

FULL, LINEAR = "full_attention", "linear_attention"


def layer_types(config: ModelConfig) -> list[str]:
    """Per-layer mixer kinds: config.json's `layer_types`, else every `full_attention_interval`-th is full."""
    n = config.num_layers
    explicit = config.get("layer_types")
    if explicit:
        kinds = [str(k) for k in explicit][:n]
        if len(kinds) != n or any(k not in (FULL, LINEAR) for k in kinds):
            raise UnsupportedError(f"layer_types must list {n} entries of {FULL!r}/{LINEAR!r}, got {explicit!r}")
        return kinds
    interval = int(config.get("full_attention_interval", 4))
    return [FULL if (i + 1) % interval == 0 else LINEAR for i in range(n)]


def num_experts(config: ModelConfig) -> int:
    """Routed experts per sparse layer (`num_experts`; transformers 5 may write `num_local_experts`)."""
    return int(config.get("num_experts") or config.get("num_local_experts") or 0)


def is_sparse_layer(config: ModelConfig, i: int) -> bool:
    """Whether layer i has a sparse MoE block (transformers' rule for Qwen3-MoE and Qwen3-Next)."""
    step = int(config.get("decoder_sparse_step", 1) or 1)
    return i not in (config.get("mlp_only_layers") or []) and num_experts(config) > 0 and (i + 1) % step == 0


def moe_config(config: ModelConfig, *, shared: bool) -> MoEConfig:
    return MoEConfig(hidden_size=config.hidden_size, intermediate_size=int(config.require("moe_intermediate_size")),
                     num_experts=num_experts(config), top_k=int(config.require("num_experts_per_tok")),
                     norm_topk_prob=bool(config.get("norm_topk_prob", True)),
                     shared_intermediate=int(config.get("shared_expert_intermediate_size", 0) or 0) if shared else 0,
                     expert_layout=detect_expert_layout(config.path))


class Qwen3NextDecoderLayer(nn.Module):
    """h = x + mixer(norm(x)); y = h + mlp(norm(h)); residual carried separately as in llama.py."""

    def __init__(self, config: ModelConfig, kind: str, cache_index: int, mlp: nn.Module,
                 backend: AttentionBackend) -> None:
        super().__init__()
        eps = float(config.get("rms_norm_eps", 1e-6))
        self.kind = kind
        self.input_layernorm = RMSNorm(config.hidden_size, eps, zero_centered=True)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps, zero_centered=True)
        if kind == FULL:
            self.self_attn = Attention(gated_attention_config(config), cache_index=cache_index, backend=backend)
        else:
            self.linear_attn = GatedDeltaNet(GDNConfig.from_model(config), state_index=cache_index)
        self.mlp = mlp

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor | None,
                ctx: ForwardContext) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, residual = self.input_layernorm.forward_residual(hidden, residual)
        mixer = self.self_attn if self.kind == FULL else self.linear_attn
        hidden = mixer(hidden, ctx)
        hidden, residual = self.post_attention_layernorm.forward_residual(hidden, residual)
        return self.mlp(hidden), residual


class Qwen3NextModel(nn.Module):
    def __init__(self, config: ModelConfig, backend: AttentionBackend) -> None:
        super().__init__()
        eps = float(config.get("rms_norm_eps", 1e-6))
        self.embed_tokens = VocabEmbedding(config.vocab_size, config.hidden_size)
        kinds = layer_types(config)
        self.layers = nn.ModuleList()
        counters = {FULL: 0, LINEAR: 0}
        for i, kind in enumerate(kinds):
            if is_sparse_layer(config, i):
                mlp: nn.Module = SparseMoE(moe_config(config, shared=True))
            else:
                mlp = GatedMLP(config.hidden_size, int(config.require("intermediate_size")))
            self.layers.append(Qwen3NextDecoderLayer(config, kind, counters[kind], mlp, backend))
            counters[kind] += 1
        self.norm = RMSNorm(config.hidden_size, eps, zero_centered=True)

    def forward(self, input_ids: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        hidden, residual = self.embed_tokens(input_ids), None
        for layer in self.layers:
            hidden, residual = layer(hidden, residual, ctx)
        return self.norm.forward_residual(hidden, residual)[0]


class Qwen3NextForCausalLM(CausalLM):
    """Qwen3-Next causal LM (e.g. Qwen3-Next-80B-A3B, in bf16 or compressed-tensors int4)."""

    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = (r"mtp\..*", r".*rotary_emb\.inv_freq")
    tied_linears: ClassVar[Mapping[str, str]] = MappingProxyType({"lm_head": "model.embed_tokens.weight"})
    # the decay parameters feed exp(): keep them float32 even in a bf16 model
    fp32_params: ClassVar[tuple[str, ...]] = (r".*linear_attn\.(A_log|dt_bias)",)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        act = config.get("hidden_act", "silu")
        if act != "silu":
            raise UnsupportedError(f"unsupported hidden_act {act!r} for {config.architecture} (only 'silu')")
        self.kinds = layer_types(config)
        self.model = Qwen3NextModel(config, TorchPagedAttention())
        self.lm_head = Linear(config.hidden_size, config.vocab_size)

    def cache_spec(self) -> CacheSpec:
        c = self.config
        gdn = GDNConfig.from_model(c)
        return CacheSpec(attention=[KVCacheSpec(c.num_kv_heads, c.head_dim) for k in self.kinds if k == FULL],
                         state=[gdn.state_spec() for k in self.kinds if k == LINEAR])
