"""AutoAWQ `gemm` int4 checkpoints (`quant_method: "awq"`, `version: "gemm"`).

Per quantized Linear: `qweight` int32 [K, N/8], `qzeros` int32 [K/G, N/8] (interleaved nibble order),
`scales` fp16 [K/G, N]. Modules listed in `modules_to_not_convert` (substring match, as AutoAWQ does)
keep a plain `.weight`. Old configs spell bits/group size `w_bit` / `q_group_size`.
`zero_point: false` is read as symmetric, W = (q - 8) * s; a `qzeros` tensor, if present, must then
hold 8 everywhere.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from awqserve.errors import ModelLoadError, UnsupportedError
from awqserve.quant.base import QuantConfig, QuantInfo, QuantizedTensor, TensorGetter
from awqserve.quant.packing import awq_gemm_to_quantized


class AwqGemmConfig(QuantConfig):
    """Reads AutoAWQ gemm Linears into the canonical `QuantizedTensor`."""

    def __init__(self, qcfg: Mapping[str, Any]) -> None:
        bits = qcfg.get("bits", qcfg.get("w_bit", 4))
        if int(bits) != 4:
            raise UnsupportedError(f"AWQ {bits}-bit weights are not supported; only 4-bit")
        version = str(qcfg.get("version", "gemm")).lower()
        if version != "gemm":
            raise UnsupportedError(f"AutoAWQ version {version!r} is not supported (its packed layout differs "
                                   f"from 'gemm'); only version 'gemm' is")
        gs = qcfg.get("group_size", qcfg.get("q_group_size", 128))
        if not isinstance(gs, int) or gs == 0 or gs < -1:
            raise UnsupportedError(f"AWQ group_size {gs!r} is not supported")
        self.group_size = int(gs)  # -1: channel-wise
        self.zero_point = bool(qcfg.get("zero_point", True))
        self.not_convert = tuple(qcfg.get("modules_to_not_convert") or ())

    def is_quantized(self, prefix: str) -> bool:
        return not any(m in prefix for m in self.not_convert)

    def read_linear(self, prefix: str, get: TensorGetter,
                    has: Callable[[str], bool]) -> torch.Tensor | QuantizedTensor:
        if not self.is_quantized(prefix):
            return get(f"{prefix}.weight")
        qweight = get(f"{prefix}.qweight")
        scales = get(f"{prefix}.scales")
        if qweight.dtype != torch.int32 or qweight.dim() != 2:
            raise ModelLoadError(f"{prefix}.qweight must be a 2-D int32 tensor, got {qweight.dtype} "
                                 f"{tuple(qweight.shape)}")
        k = qweight.shape[0]
        g = k if self.group_size == -1 else self.group_size
        if k % g:
            raise UnsupportedError(f"{prefix}: AWQ group size {g} does not divide in_features {k}")
        qzeros = get(f"{prefix}.qzeros") if (self.zero_point or has(f"{prefix}.qzeros")) else None
        try:
            qt = awq_gemm_to_quantized(qweight, qzeros, scales, g)
        except ValueError as e:
            raise ModelLoadError(f"{prefix}: {e}") from e
        if not self.zero_point and qt.zeros is not None:
            if bool((qt.zeros != 0).any()):
                raise UnsupportedError(f"{prefix}: zero_point=false but qzeros are not all 8 "
                                       "(asymmetric zeros in a symmetric AWQ checkpoint)")
            qt = QuantizedTensor(qt.qweight, qt.scales, None, qt.group_size)
        return qt

    def info(self) -> QuantInfo:
        return QuantInfo(method="awq", format="gemm", bits=4, group_size=self.group_size,
                         symmetric=not self.zero_point)
