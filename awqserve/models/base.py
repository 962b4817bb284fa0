"""The model contract the engine relies on."""
from __future__ import annotations

from abc import ABC, abstractmethod
from types import MappingProxyType
from typing import ClassVar, Mapping

import torch
from torch import nn

from awqserve.attention.metadata import CacheSpec, ForwardContext
from awqserve.config.model_config import ModelConfig
from awqserve.layers.linear import Linear
from awqserve.quant.base import QuantInfo


class CausalLM(nn.Module, ABC):
    """A decoder-only LM over the flat token layout of `ForwardContext`.

    Construction happens on the meta device (no storage); the loader then materialises every
    parameter/buffer from the checkpoint (strict: all checkpoint tensors consumed, all model
    tensors filled), guided by the class-level hooks below, and sets `quant_info`.

    - `forward(input_ids [T], ctx)` returns hidden states [T, hidden] of the last layer after the
      final norm; it reads/writes only the caches given in `ctx`. Default: `self.model(input_ids, ctx)`
      (the HF layout: the decoder under `model.*`).
    - `compute_logits(hidden [N, hidden])` returns float32 logits [N, vocab_size]. Default:
      `self.lm_head` (a Linear) applied, then cast to float32.
    - `cache_spec()` describes per-sequence caches; its attention/state lists are in the same order
      as the indices the layers use into `ctx.kv_caches` / `ctx.conv_states` / `ctx.recurrent_states`.
    """

    # Checkpoint tensor names (regexes, full match) the model deliberately does not load,
    # e.g. rotary inv_freq buffers or an MTP head.
    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = ()
    # True when a decode step traces into one graph (no data-dependent shapes, attention through the
    # paged backend): the engine may then compile it (compile/compiled_decode.py).
    compilable_decode: ClassVar[bool] = False
    # Linear name -> checkpoint tensor it reuses when config.tie_word_embeddings and the checkpoint
    # has no weight of its own (e.g. {"lm_head": "model.embed_tokens.weight"}).
    tied_linears: ClassVar[Mapping[str, str]] = MappingProxyType({})
    # Parameter names (regexes, full match) kept in float32 whatever the model dtype is.
    fp32_params: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.quant_info: QuantInfo | None = None  # set by the loader from the checkpoint's quantization config

    model: nn.Module  # the decoder (HF layout: `model.*`), used by the default forward

    def forward(self, input_ids: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        hidden: torch.Tensor = self.model(input_ids, ctx)
        return hidden

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        head = self.logits_linear()
        assert head is not None, f"{type(self).__name__} must override compute_logits (no lm_head)"
        logits: torch.Tensor = head(hidden)
        return logits.float()

    def logits_linear(self) -> Linear | None:
        """The Linear projecting hidden states to logits (`lm_head` in HF layouts), if the model has one:
        the loader gives it its own kernel choice and compiled decode graphs leave it out."""
        head = getattr(self, "lm_head", None)
        return head if isinstance(head, Linear) else None

    @abstractmethod
    def cache_spec(self) -> CacheSpec: ...

    def checkpoint_name(self, param_name: str) -> str:
        """Map a model parameter/buffer name to its checkpoint tensor name (override for renames)."""
        return param_name
