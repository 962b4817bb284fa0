"""Frozen engine configuration. CLI flags (vLLM's names where they exist) map onto these fields."""
from __future__ import annotations

import enum
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


class WeightLayout(str, enum.Enum):
    """How int4 weights are kept on the CPU (quant/kernels.py): `auto` = the measured hybrid rule,
    `int4` = int4-resident only (smallest), `dense` = dequantized once (the exact float reference)."""

    AUTO = "auto"
    INT4 = "int4"
    DENSE = "dense"


class LmHeadPrecision(str, enum.Enum):
    """The logits projection: `auto` = an int8 copy for <= 4 rows on bf16-native CPUs, `int8` = always
    that, `float` = exact."""

    AUTO = "auto"
    INT8 = "int8"
    FLOAT = "float"


def enum_values(kind: type[enum.Enum]) -> list[str]:
    """The accepted spellings of a mode enum (CLI choices)."""
    return [str(m.value) for m in kind]


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
    dtype: str = "auto"  # auto (engine_factory.resolve_dtype) or a dtype name: explicit dtypes bind every kernel
    max_model_len: int | None = None
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    block_size: int = 16
    kv_cache_memory: int | None = None  # bytes
    gpu_memory_utilization: float = 0.9
    enable_prefix_caching: bool | None = None  # None = on where supported
    weight_layout: WeightLayout = WeightLayout.AUTO  # a plain string is accepted and converted
    seed: int = 0
    max_logprobs: int = 20
    num_threads: int | None = None  # torch intra-op threads (CPU)
    lm_head_precision: LmHeadPrecision = LmHeadPrecision.AUTO
    enforce_eager: bool = False  # never compile the decode step (CPU compiles it by default)
    # "auto": the checkpoint's safetensors; "dummy" (vLLM's name): config.json shapes, random weights
    # made on the device (loader/dummy.py) — for measuring a model without downloading it
    load_format: str = "auto"

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1:
            raise ValueError("max_num_seqs must be >= 1")
        if self.max_num_batched_tokens < 1:
            raise ValueError("max_num_batched_tokens must be >= 1")
        if self.block_size < 1 or self.block_size & (self.block_size - 1):
            raise ValueError("block_size must be a power of two")
        # the one place mode strings are checked: the enums' own constructors
        object.__setattr__(self, "weight_layout", _mode(WeightLayout, self.weight_layout, "weight_layout"))
        object.__setattr__(self, "lm_head_precision",
                           _mode(LmHeadPrecision, self.lm_head_precision, "lm_head_precision"))
        if self.load_format not in ("auto", "dummy"):
            raise ValueError(f"load_format must be auto or dummy, got {self.load_format!r}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        if self.dtype != "auto":
            from awqserve.config.model_config import parse_dtype  # torch only when a dtype is named

            parse_dtype(self.dtype)  # raises naming the accepted dtypes


def _mode(kind: type[enum.Enum], value: object, name: str) -> enum.Enum:
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{name} must be one of {', '.join(enum_values(kind))}, got {value!r}") from None
