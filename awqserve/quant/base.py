"""Quantization contracts: the canonical unpacked int4 weight, per-module schemes, and the config ABC.

Every checkpoint format is converted once at load into `QuantizedTensor` (signed int4 values in
an int8 tensor, float scales, optional signed zero points). Kernels are built from that canonical
form, so fused modules (q|k|v, gate|up) can be concatenated along the output dim before packing.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch


@dataclass
class QuantizedTensor:
    """An int4 weight W[N, K] in canonical form.

    Invariants: `qweight` is int8 [N, K] with values in -8..7; `scales` is float [N, K // group_size];
    `zeros` is None (symmetric) or int8 [N, K // group_size] in -8..7;
    W[n, k] = (qweight[n, k] - zeros[n, k // G]) * scales[n, k // G]. Channel-wise means G == K.
    """

    qweight: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    group_size: int

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.qweight.shape[0]), int(self.qweight.shape[1])

    @property
    def symmetric(self) -> bool:
        return self.zeros is None

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        n, k = self.shape
        g = self.group_size
        q = self.qweight.to(torch.float32).view(n, k // g, g)
        if self.zeros is not None:
            q = q - self.zeros.to(torch.float32).unsqueeze(-1)
        return (q * self.scales.to(torch.float32).unsqueeze(-1)).view(n, k).to(dtype)

    @staticmethod
    def concat_out(parts: list["QuantizedTensor"]) -> "QuantizedTensor":
        """Stack along the output dim; all parts must share K and group size."""
        g = parts[0].group_size
        if any(p.group_size != g or p.shape[1] != parts[0].shape[1] for p in parts):
            raise ValueError("cannot fuse int4 weights with different K or group size")
        sym = all(p.zeros is None for p in parts)
        zeros = None
        if not sym:
            zeros = torch.cat([p.zeros if p.zeros is not None else torch.zeros_like(p.scales, dtype=torch.int8)
                               for p in parts])
        return QuantizedTensor(torch.cat([p.qweight for p in parts]), torch.cat([p.scales for p in parts]),
                               zeros, g)


TensorGetter = Callable[[str], torch.Tensor]
"""Reads one tensor by full checkpoint name (raises ModelLoadError naming it if absent) and marks it consumed."""


@dataclass(frozen=True)
class QuantInfo:
    """Quantization metadata reported by the API (/v1/models, response headers)."""

    method: str  # "awq" or "none"
    format: str  # "pack-quantized" | "gemm" | "float"
    bits: int | None = None
    group_size: int | None = None
    symmetric: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "format": self.format, "bits": self.bits,
                "group_size": self.group_size, "symmetric": self.symmetric}


class QuantConfig(ABC):
    """A checkpoint's quantization scheme; decides, per checkpoint module name, how to read a Linear.

    `is_quantized(prefix)` must be answerable from names alone (no tensor reads), and
    `read_linear(prefix, get)` must consume exactly the tensors belonging to that module's weight
    (not the bias), returning a float tensor [N, K] or a QuantizedTensor.
    """

    @abstractmethod
    def is_quantized(self, prefix: str) -> bool: ...

    @abstractmethod
    def read_linear(self, prefix: str, get: TensorGetter, has: Callable[[str], bool]) -> "torch.Tensor | QuantizedTensor": ...

    @abstractmethod
    def info(self) -> QuantInfo: ...


class NoQuantConfig(QuantConfig):
    """Plain float checkpoints: every Linear reads `<prefix>.weight`."""

    def is_quantized(self, prefix: str) -> bool:
        return False

    def read_linear(self, prefix: str, get: TensorGetter, has: Callable[[str], bool]) -> torch.Tensor:
        return get(f"{prefix}.weight")

    def info(self) -> QuantInfo:
        return QuantInfo(method="none", format="float")


def parse_quant_config(quantization_config: Mapping[str, Any] | None) -> QuantConfig:
    """Pick the QuantConfig for config.json's `quantization_config` (None → float checkpoint).

    Unsupported methods/formats raise UnsupportedError naming the feature.
    """
    from awqserve.quant.registry import make_quant_config  # lazy: formats import kernels

    if not quantization_config:
        return NoQuantConfig()
    return make_quant_config(quantization_config)
