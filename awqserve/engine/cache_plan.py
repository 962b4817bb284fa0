"""KV-cache and state-slot sizing: how many blocks and slots fit a memory budget.

One paged KV tensor [2, num_blocks, block_size, Hkv, D] per attention layer and, for hybrid models,
one conv and one recurrent state tensor per GDN layer with a row per state slot. `num_blocks` is
derived from a memory budget and capped at what `max_num_seqs` sequences of `max_model_len` tokens
could ever use.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from awqserve.attention.metadata import CacheSpec
from awqserve.config.engine_config import EngineConfig

CPU_DEFAULT_KV_BYTES = 1 << 30
_CUDA_ACTIVATION_RESERVE = 1 << 30  # headroom for activations, logits and allocator slack


@dataclass(frozen=True)
class CachePlan:
    num_blocks: int
    block_bytes: int
    num_state_slots: int
    slot_bytes: int

    @property
    def kv_bytes(self) -> int:
        return self.num_blocks * self.block_bytes

    @property
    def state_bytes(self) -> int:
        return self.num_state_slots * self.slot_bytes


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def plan_caches(spec: CacheSpec, *, config: EngineConfig, max_model_len: int, dtype: torch.dtype,
                budget_bytes: int) -> CachePlan:
    """Blocks and state slots that fit `budget_bytes` (state slots first: one per possible sequence)."""
    bs, elem = config.block_size, _itemsize(dtype)
    block_bytes = sum(2 * bs * s.num_kv_heads * s.head_dim * elem for s in spec.attention)
    slot_bytes = sum(_numel(s.conv_shape) * _itemsize(s.conv_dtype)
                     + _numel(s.recurrent_shape) * _itemsize(s.recurrent_dtype) for s in spec.state)
    slots = config.max_num_seqs if spec.state else 0
    per_seq = -(-max_model_len // bs)
    cap = config.max_num_seqs * per_seq
    left = budget_bytes - slots * slot_bytes
    num_blocks = cap if block_bytes == 0 else min(cap, left // block_bytes)
    if num_blocks < per_seq:
        need = per_seq * block_bytes + slots * slot_bytes
        raise ValueError(
            f"KV cache budget {budget_bytes / 2**20:.0f} MiB cannot hold one sequence of max_model_len="
            f"{max_model_len} tokens (needs {need / 2**20:.0f} MiB); raise --kv-cache-memory or lower "
            f"--max-model-len")
    return CachePlan(num_blocks, block_bytes, slots, slot_bytes)


def default_budget(config: EngineConfig, device: torch.device) -> int:
    if config.kv_cache_memory is not None:
        return config.kv_cache_memory
    if device.type != "cuda":
        return CPU_DEFAULT_KV_BYTES
    free, total = torch.cuda.mem_get_info(device)
    used = total - free
    return max(0, int(total * config.gpu_memory_utilization) - used - _CUDA_ACTIVATION_RESERVE)
