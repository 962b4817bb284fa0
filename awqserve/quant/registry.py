"""`quantization_config` (config.json) -> QuantConfig; unsupported methods are refused by name."""
from __future__ import annotations

from typing import Any, Mapping

from awqserve.errors import UnsupportedError
from awqserve.quant.base import NoQuantConfig, QuantConfig

SUPPORTED = "compressed-tensors pack-quantized int4, AutoAWQ gemm int4, or float (unquantized) checkpoints"

_KNOWN_UNSUPPORTED = {
    "gptq": "GPTQ", "gptq_marlin": "GPTQ (marlin)", "awq_marlin": "AWQ marlin", "fp8": "FP8",
    "fbgemm_fp8": "FP8 (fbgemm)", "bitsandbytes": "bitsandbytes", "gguf": "GGUF", "hqq": "HQQ",
    "eetq": "EETQ", "aqlm": "AQLM", "quanto": "quanto", "torchao": "torchao", "exl2": "EXL2",
    "mxfp4": "MXFP4", "modelopt": "ModelOpt (NVFP4/FP8)", "bitnet": "BitNet", "higgs": "HIGGS",
    "vptq": "VPTQ", "spqr": "SpQR", "fp_quant": "FP-Quant", "auto-round": "AutoRound",
}


def make_quant_config(qcfg: Mapping[str, Any]) -> QuantConfig:
    """Dispatch on `quant_method`. Raises UnsupportedError naming the method and what is supported."""
    method = str(qcfg.get("quant_method", "")).lower()
    if method in ("compressed-tensors", "compressed_tensors"):
        from awqserve.quant.compressed_tensors import CompressedTensorsConfig

        return CompressedTensorsConfig(qcfg)
    if method == "awq" or (not method and ("w_bit" in qcfg or "q_group_size" in qcfg)):
        from awqserve.quant.awq_gemm import AwqGemmConfig

        return AwqGemmConfig(qcfg)
    if method == "none":
        return NoQuantConfig()
    if not method:
        raise UnsupportedError(f"quantization_config has no quant_method; awqserve loads {SUPPORTED}")
    name = _KNOWN_UNSUPPORTED.get(method, method)
    raise UnsupportedError(f"quantization method {name!r} (quant_method={method!r}) is not supported; "
                           f"awqserve loads {SUPPORTED}")
