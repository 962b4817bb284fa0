"""quantization_config parsing: module selection (targets, ignore exact + regex), tensor reading and
consumption, and refusals that name the unsupported feature."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from awqserve.errors import ModelLoadError, UnsupportedError
from awqserve.quant.awq_gemm import AwqGemmConfig
from awqserve.quant.base import NoQuantConfig, QuantizedTensor, parse_quant_config
from awqserve.quant.compressed_tensors import CompressedTensorsConfig
from awqserve.quant.packing import pack_awq, pack_ct_weight, pack_ct_zeros, quantize_rtn


def ct_config(symmetric: bool = True, group_size: int | None = 32, ignore: list[str] | None = None,
              targets: list[str] | None = None, **weights: Any) -> dict[str, Any]:
    w = {"num_bits": 4, "type": "int", "symmetric": symmetric, "strategy": "group" if group_size else "channel",
         "group_size": group_size, "dynamic": False, "actorder": None, "observer": "minmax"}
    w.update(weights)
    return {"quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
            "config_groups": {"group_0": {"targets": targets or ["Linear"], "weights": w,
                                          "input_activations": None, "output_activations": None}},
            "ignore": ignore if ignore is not None else ["lm_head", "re:.*mlp.gate$"]}


class Store:
    """A dict of tensors with the loader's get/has semantics and consumed-key tracking."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors, self.consumed = tensors, set()

    def get(self, name: str) -> torch.Tensor:
        if name not in self.tensors:
            raise ModelLoadError(f"missing tensor {name}")
        self.consumed.add(name)
        return self.tensors[name]

    def has(self, name: str) -> bool:
        return name in self.tensors


def ct_tensors(prefix: str, qt: QuantizedTensor, scale_dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    out = {f"{prefix}.weight_packed": pack_ct_weight(qt.qweight),
           f"{prefix}.weight_scale": qt.scales.to(scale_dtype),
           f"{prefix}.weight_shape": torch.tensor(qt.shape, dtype=torch.int64)}
    if qt.zeros is not None:
        out[f"{prefix}.weight_zero_point"] = pack_ct_zeros(qt.zeros)
    return out


def test_ignore_exact_and_regex() -> None:
    cfg = parse_quant_config(ct_config())
    assert isinstance(cfg, CompressedTensorsConfig)
    assert not cfg.is_quantized("lm_head")
    assert not cfg.is_quantized("model.layers.3.mlp.gate")  # router, by regex
    assert cfg.is_quantized("model.layers.3.mlp.gate_proj")  # "$" keeps gate_proj quantized
    assert cfg.is_quantized("model.layers.0.self_attn.q_proj")
    assert cfg.is_quantized("model.lm_head_extra")  # exact names do not match prefixes
    info = cfg.info()
    assert (info.method, info.format, info.bits, info.group_size, info.symmetric) == ("awq", "pack-quantized", 4, 32,
                                                                                    True)


def test_regex_targets_and_shared_expert_ignore() -> None:
    cfg = parse_quant_config(ct_config(targets=["re:.*experts.*", "model.layers.0.self_attn.o_proj"],
                                       ignore=["re:.*shared_expert.*"]))
    assert cfg.is_quantized("model.layers.1.mlp.experts.7.down_proj")
    assert cfg.is_quantized("model.layers.0.self_attn.o_proj")
    assert not cfg.is_quantized("model.layers.1.self_attn.o_proj")
    assert not cfg.is_quantized("model.layers.1.mlp.shared_expert.up_proj")


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group", [32, 64, None])
def test_ct_read_linear(symmetric: bool, group: int | None) -> None:
    torch.manual_seed(0)
    qt = quantize_rtn(torch.randn(40, 128), group, symmetric)
    p = "model.layers.0.mlp.down_proj"
    store = Store({**ct_tensors(p, qt), f"{p}.bias": torch.zeros(40), "lm_head.weight": torch.randn(8, 128)})
    cfg = parse_quant_config(ct_config(symmetric, group))
    got = cfg.read_linear(p, store.get, store.has)
    assert isinstance(got, QuantizedTensor) and got.group_size == (group or 128)
    assert got.scales.dtype == torch.float32
    # scales went through bf16 in the checkpoint; everything else is exact
    torch.testing.assert_close(got.dequantize(), QuantizedTensor(qt.qweight, qt.scales.bfloat16().float(), qt.zeros,
                                                                  qt.group_size).dequantize(), rtol=0, atol=0)
    expected = {f"{p}.weight_packed", f"{p}.weight_scale", f"{p}.weight_shape"}
    assert store.consumed == expected | (set() if symmetric else {f"{p}.weight_zero_point"})
    dense = cfg.read_linear("lm_head", store.get, store.has)
    assert isinstance(dense, torch.Tensor) and "lm_head.weight" in store.consumed


def test_ct_weight_shape_checked() -> None:
    qt = quantize_rtn(torch.randn(16, 64), 32, True)
    store = Store(ct_tensors("m", qt))
    store.tensors["m.weight_shape"] = torch.tensor([16, 128])
    with pytest.raises(ModelLoadError, match="weight_shape"):
        parse_quant_config(ct_config()).read_linear("m", store.get, store.has)


def test_ct_g_idx_refused() -> None:
    qt = quantize_rtn(torch.randn(16, 64), 32, True)
    store = Store({**ct_tensors("m", qt), "m.weight_g_idx": torch.zeros(64, dtype=torch.int32)})
    with pytest.raises(UnsupportedError, match=r"act-order \(g_idx\)"):
        parse_quant_config(ct_config()).read_linear("m", store.get, store.has)
    with pytest.raises(UnsupportedError, match=r"act-order \(g_idx\)"):
        parse_quant_config(ct_config(actorder="group"))


@pytest.mark.parametrize("change, feature", [
    ({"num_bits": 8}, "8-bit"),
    ({"type": "float"}, "float"),
    ({"strategy": "tensor"}, "strategy 'tensor'"),
    ({"dynamic": True}, "dynamic"),
])
def test_ct_weight_refusals(change: dict[str, Any], feature: str) -> None:
    with pytest.raises(UnsupportedError, match=feature):
        parse_quant_config(ct_config(**change))


@pytest.mark.parametrize("top, feature", [
    ({"format": "float-quantized"}, "float-quantized"),
    ({"format": "marlin-24"}, "marlin-24"),
    ({"quantization_status": "frozen"}, "frozen"),
    ({"kv_cache_scheme": {"num_bits": 8, "type": "float"}}, "KV-cache"),
])
def test_ct_config_refusals(top: dict[str, Any], feature: str) -> None:
    with pytest.raises(UnsupportedError, match=feature):
        parse_quant_config({**ct_config(), **top})


def test_ct_activation_quant_refused() -> None:
    cfg = ct_config()
    cfg["config_groups"]["group_0"]["input_activations"] = {"num_bits": 8, "type": "int"}
    with pytest.raises(UnsupportedError, match="activation quantization"):
        parse_quant_config(cfg)


@pytest.mark.parametrize("method, feature", [("gptq", "GPTQ"), ("fp8", "FP8"), ("bitsandbytes", "bitsandbytes"),
                                             ("something_new", "something_new")])
def test_unknown_methods_refused(method: str, feature: str) -> None:
    with pytest.raises(UnsupportedError, match=feature) as e:
        parse_quant_config({"quant_method": method, "bits": 4})
    assert "compressed-tensors pack-quantized int4" in str(e.value) and "gemm" in str(e.value)


def test_no_config_is_float() -> None:
    assert isinstance(parse_quant_config(None), NoQuantConfig)
    assert isinstance(parse_quant_config({}), NoQuantConfig)


def awq_tensors(prefix: str, qt: QuantizedTensor) -> dict[str, torch.Tensor]:
    z = qt.zeros if qt.zeros is not None else torch.zeros_like(qt.scales, dtype=torch.int8)
    return {f"{prefix}.qweight": pack_awq((qt.qweight.long() + 8).t()),
            f"{prefix}.qzeros": pack_awq((z.long() + 8).t()),
            f"{prefix}.scales": qt.scales.t().half().contiguous()}


@pytest.mark.parametrize("cfg", [
    {"quant_method": "awq", "bits": 4, "group_size": 32, "zero_point": True, "version": "gemm",
     "modules_to_not_convert": ["visual", "lm_head"]},
    {"w_bit": 4, "q_group_size": 32, "zero_point": True, "version": "GEMM", "modules_to_not_convert": ["lm_head"]},
])
def test_awq_gemm_read(cfg: dict[str, Any]) -> None:
    torch.manual_seed(2)
    qt = quantize_rtn(torch.randn(32, 64), 32, symmetric=False)
    store = Store({**awq_tensors("model.layers.0.mlp.up_proj", qt), "lm_head.weight": torch.randn(4, 64)})
    qc = parse_quant_config(cfg)
    assert isinstance(qc, AwqGemmConfig) and qc.info().format == "gemm"
    got = qc.read_linear("model.layers.0.mlp.up_proj", store.get, store.has)
    ref = QuantizedTensor(qt.qweight, qt.scales.half().float(), qt.zeros, 32).dequantize()
    torch.testing.assert_close(got.dequantize(), ref, rtol=0, atol=0)
    assert not qc.is_quantized("lm_head")
    assert isinstance(qc.read_linear("lm_head", store.get, store.has), torch.Tensor)
    assert len(store.consumed) == 4


def test_awq_zero_point_false_is_symmetric() -> None:
    qt = quantize_rtn(torch.randn(16, 64), 32, symmetric=True)
    store = Store(awq_tensors("m", qt))  # qzeros all 8
    got = parse_quant_config({"quant_method": "awq", "bits": 4, "group_size": 32, "zero_point": False,
                              "version": "gemm"}).read_linear("m", store.get, store.has)
    assert got.zeros is None
    torch.testing.assert_close(got.dequantize(), QuantizedTensor(qt.qweight, qt.scales.half().float(), None,
                                                                  32).dequantize(), rtol=0, atol=0)


@pytest.mark.parametrize("version", ["gemv", "gemv_fast", "marlin", "exllama"])
def test_awq_other_versions_refused(version: str) -> None:
    with pytest.raises(UnsupportedError, match=f"version '{version}'"):
        parse_quant_config({"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True,
                            "version": version})


def test_awq_bits_refused() -> None:
    with pytest.raises(UnsupportedError, match="3-bit"):
        parse_quant_config({"quant_method": "awq", "bits": 3, "group_size": 128, "version": "gemm"})
