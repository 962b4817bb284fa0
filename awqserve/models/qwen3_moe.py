"""Qwen3-MoE (model_type `qwen3_moe`): Qwen3 attention blocks with sparse MoE MLPs (no shared expert).

Layers in `mlp_only_layers`, or off the `decoder_sparse_step` grid, keep Qwen3's dense SwiGLU; the
others read `mlp.gate` (router) and `mlp.experts.*` (see layers/moe.py for both expert layouts).
"""
from __future__ import annotations

from typing import ClassVar

from awqserve.config.model_config import ModelConfig
from awqserve.layers.moe import SparseMoE
from awqserve.models.qwen3 import Qwen3ForCausalLM
from awqserve.models.qwen3_next import is_sparse_layer, moe_config


class Qwen3MoeForCausalLM(Qwen3ForCausalLM):
    """Qwen3 dense decoder whose sparse layers' `mlp` is a `SparseMoE` (built on meta, so swapping is free)."""

    compilable_decode: ClassVar[bool] = False  # expert routing gives data-dependent shapes

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        cfg = None
        for i, layer in enumerate(self.model.layers):
            if is_sparse_layer(config, i):
                cfg = cfg or moe_config(config, shared=False)
                layer.mlp = SparseMoE(cfg)
