"""Frozen engine configuration. CLI flags (vLLM's names where they exist) map onto these fields."""
from __future__ import annotations

from dataclasses import dataclass


def parse_bytes(text: str | int) -> int:
    """'4GiB', '512MiB', '2G', '1000000' → bytes."""
    if isinstance(text, int):
        return text
    s = text.strip().lower().replace(" ", "")
    units = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
             "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
             "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "b": 1}
    for suffix, mult in units.items():
        if s.endswith(suffix):
            return int(float(s[: -len(suffix)]) * mult)
    return int(float(s))


@dataclass(frozen=True)
class EngineConfig:
    """Everything that shapes the engine. Derived limits are validated in `__post_init__`.

    `max_model_len` None means the model's own limit capped at 8192 (resolved by the engine).
    `kv_cache_memory` None means the device default (CPU: 1 GiB; CUDA: from
    `gpu_memory_utilization` of free memory after weights).
    """

    model: str | None = None  # model dir; None = the built-in demo model
    served_model_name: str | None = None
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # activation dtype: auto (cpu fp32, cuda bf16) | float32 | bfloat16 | float16
    max_model_len: int | None = None
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    block_size: int = 16
    kv_cache_memory: int | None = None  # bytes
    gpu_memory_utilization: float = 0.9
    enable_prefix_caching: bool | None = None  # None = on where supported
    weight_layout: str = "auto"  # auto | int4 | dense  (CPU linear kernels)
    seed: int = 0
    max_logprobs: int = 20
    num_threads: int | None = None  # torch intra-op threads (CPU)
    lm_head_precision: str = "auto"  # auto | int8 | float (quant.kernels.logits_kernel)
    enforce_eager: bool = False  # never compile the decode step (CPU compiles it by default)

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1:
            raise ValueError("max_num_seqs must be >= 1")
        if self.max_num_batched_tokens < 1:
            raise ValueError("max_num_batched_tokens must be >= 1")
        if self.block_size < 1 or self.block_size & (self.block_size - 1):
            raise ValueError("block_size must be a power of two")
        if self.weight_layout not in ("auto", "int4", "dense"):
            raise ValueError("weight_layout must be auto, int4 or dense")
        if self.lm_head_precision not in ("auto", "int8", "float"):
            raise ValueError("lm_head_precision must be auto, int8 or float")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")
