"""The model contract the engine relies on."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import nn

from awqserve.attention.metadata import CacheSpec, ForwardContext
from awqserve.config.model_config import ModelConfig


class CausalLM(nn.Module, ABC):
    """A decoder-only LM over the flat token layout of `ForwardContext`.

    Construction happens on the meta device (no storage); the loader then materialises every
    parameter/buffer from the checkpoint (strict: all checkpoint tensors consumed, all model
    tensors filled) and calls `finalize`.

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
    # paged backend): the engine may then compile it (engine/compiled_decode.py).
    compilable_decode: ClassVar[bool] = False

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, input_ids: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        return self.model(input_ids, ctx)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden).float()

    @abstractmethod
    def cache_spec(self) -> CacheSpec: ...

    def checkpoint_name(self, param_name: str) -> str:
        """Map a model parameter/buffer name to its checkpoint tensor name (override for renames)."""
        return param_name

    def finalize(self) -> None:
        """Hook run after all weights are loaded (e.g. tie lm_head to embeddings). Default: nothing."""
