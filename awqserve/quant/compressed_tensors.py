"""compressed-tensors `pack-quantized` int4 weight-only checkpoints (what llm-compressor writes).

Supported: quant_method "compressed-tensors", format "pack-quantized", status "compressed", weights
num_bits 4, type int, symmetric or not, strategy group (any group size dividing K) or channel, no
activation quantization. Modules are selected by `config_groups[*].targets` ("Linear", exact names,
"re:" regexes) minus `ignore` (exact names or "re:" regexes, matched with `re.match` like
compressed-tensors does); everything else reads a plain `<prefix>.weight`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from awqserve.errors import ModelLoadError, UnsupportedError
from awqserve.quant.base import QuantConfig, QuantInfo, QuantizedTensor, TensorGetter
from awqserve.quant.packing import unpack_ct_weight, unpack_ct_zeros

_FLOAT_FORMATS = {"float-quantized", "naive-float-quantized", "nvfp4-pack-quantized", "mxfp4-pack-quantized",
                  "mxfp8-quantized", "mxfp6-pack-quantized"}


@dataclass(frozen=True)
class WeightScheme:
    """The weight quantization of one config group (only what the reader needs)."""

    symmetric: bool
    group_size: int | None  # None: channel-wise (one scale per output row)


@dataclass(frozen=True)
class _Group:
    name: str
    targets: tuple[str, ...]
    scheme: WeightScheme


def _matches(name: str, pattern: str) -> bool:
    if pattern.startswith("re:"):
        return re.match(pattern[3:], name) is not None
    return name == pattern


def _is_class_target(target: str) -> bool:
    """"Linear" (or any class name such as "QuantLinear") selects every linear module by type."""
    return not target.startswith("re:") and "." not in target and target.endswith("Linear")


def _parse_weights(group: str, cfg: Mapping[str, Any]) -> WeightScheme:
    w = cfg.get("weights")
    if not w:
        raise UnsupportedError(f"compressed-tensors group {group!r} does not quantize weights; only int4 "
                               "weight-only (W4A16) is supported")
    for key, what in (("input_activations", "activation quantization (W4A4/W4A8)"),
                      ("output_activations", "output activation quantization")):
        if cfg.get(key):
            raise UnsupportedError(f"compressed-tensors {what} in group {group!r} is not supported; "
                                   "only int4 weight-only (W4A16) is")
    if w.get("type", "int") != "int":
        raise UnsupportedError(f"compressed-tensors {w.get('type')} weights (float formats such as fp8/fp4) "
                               "are not supported; only int4")
    bits = int(w.get("num_bits", 0))
    if bits != 4:
        raise UnsupportedError(f"compressed-tensors {bits}-bit int weights are not supported; only 4-bit")
    if w.get("actorder") not in (None, "null", False):
        raise UnsupportedError(f"compressed-tensors act-order (g_idx), actorder={w.get('actorder')!r}, "
                               "is not supported")
    if w.get("dynamic"):
        raise UnsupportedError("compressed-tensors dynamic weight quantization is not supported")
    strategy = w.get("strategy", "group")
    if strategy == "channel":
        return WeightScheme(bool(w.get("symmetric", True)), None)
    if strategy != "group":
        raise UnsupportedError(f"compressed-tensors weight strategy {strategy!r} is not supported; "
                               "only 'group' and 'channel'")
    gs = w.get("group_size")
    if not isinstance(gs, int) or gs <= 0:
        raise UnsupportedError(f"compressed-tensors group strategy needs a positive group_size, got {gs!r}")
    return WeightScheme(bool(w.get("symmetric", True)), gs)


class CompressedTensorsConfig(QuantConfig):
    """Reads int4 pack-quantized Linears; unquantized modules read `<prefix>.weight`."""

    def __init__(self, qcfg: Mapping[str, Any]) -> None:
        fmt = qcfg.get("format")
        status = qcfg.get("quantization_status", "compressed")
        if status != "compressed":
            raise UnsupportedError(f"compressed-tensors quantization_status {status!r} is not supported; "
                                   "only 'compressed' checkpoints")
        if qcfg.get("sparsity_config"):
            raise UnsupportedError("compressed-tensors sparsity (sparsity_config) is not supported")
        if qcfg.get("transform_config"):
            raise UnsupportedError("compressed-tensors transforms (transform_config, e.g. Hadamard rotations) "
                                   "are not supported")
        if qcfg.get("kv_cache_scheme"):
            raise UnsupportedError("compressed-tensors KV-cache quantization (kv_cache_scheme) is not supported")
        groups: list[_Group] = []
        for name, gcfg in (qcfg.get("config_groups") or {}).items():
            self._check_format(gcfg.get("format") or fmt)
            targets = tuple(gcfg.get("targets") or ())
            if not targets:
                raise UnsupportedError(f"compressed-tensors group {name!r} has no targets")
            groups.append(_Group(name, targets, _parse_weights(name, gcfg)))
        if not groups:
            raise UnsupportedError("compressed-tensors quantization_config has no config_groups")
        self.groups = groups
        self.ignore = tuple(qcfg.get("ignore") or ())
        self.format = "pack-quantized"

    @staticmethod
    def _check_format(fmt: str | None) -> None:
        if fmt == "pack-quantized":
            return
        if fmt in _FLOAT_FORMATS:
            raise UnsupportedError(f"compressed-tensors float format {fmt!r} (fp8/fp4) is not supported; "
                                   "only int4 'pack-quantized'")
        raise UnsupportedError(f"compressed-tensors format {fmt!r} is not supported; only int4 'pack-quantized'")

    def scheme_for(self, prefix: str) -> WeightScheme | None:
        """The scheme of module `prefix`, or None when it stays unquantized.

        Precedence follows compressed-tensors: an exact-name target beats a regex, which beats a class.
        """
        if any(_matches(prefix, pat) for pat in self.ignore):
            return None
        for kind in ("exact", "regex", "class"):
            for g in self.groups:
                for t in g.targets:
                    if kind == "class" and _is_class_target(t):
                        return g.scheme
                    if kind == "regex" and t.startswith("re:") and _matches(prefix, t):
                        return g.scheme
                    if kind == "exact" and not t.startswith("re:") and t == prefix:
                        return g.scheme
        return None

    def is_quantized(self, prefix: str) -> bool:
        return self.scheme_for(prefix) is not None

    def read_linear(self, prefix: str, get: TensorGetter,
                    has: Callable[[str], bool]) -> torch.Tensor | QuantizedTensor:
        scheme = self.scheme_for(prefix)
        if scheme is None:
            return get(f"{prefix}.weight")
        if has(f"{prefix}.weight_g_idx"):
            raise UnsupportedError(f"{prefix}: act-order (g_idx) int4 weights are not supported")
        packed = get(f"{prefix}.weight_packed")
        scale = get(f"{prefix}.weight_scale")
        shape = [int(v) for v in get(f"{prefix}.weight_shape").reshape(-1).tolist()]
        if packed.dtype != torch.int32 or packed.dim() != 2 or len(shape) != 2:
            raise ModelLoadError(f"{prefix}.weight_packed must be a 2-D int32 tensor with a 2-element "
                                 f"weight_shape; got {packed.dtype} {tuple(packed.shape)}, shape {shape}")
        n, k = shape
        if packed.shape[0] != n or packed.shape[1] != -(-k // 8):
            raise ModelLoadError(f"{prefix}.weight_packed shape {tuple(packed.shape)} does not match "
                                 f"weight_shape {shape} (expected {[n, -(-k // 8)]})")
        g = k if scheme.group_size is None else scheme.group_size
        if k % g:
            raise UnsupportedError(f"{prefix}: group size {g} does not divide in_features {k}")
        if tuple(scale.shape) != (n, k // g):
            raise ModelLoadError(f"{prefix}.weight_scale shape {tuple(scale.shape)} != expected {(n, k // g)}")
        q = unpack_ct_weight(packed, k)
        zeros = None
        if scheme.symmetric and has(f"{prefix}.weight_zero_point"):
            # some writers keep an all-zero point for symmetric schemes: consume it, insist it is zero
            zp = get(f"{prefix}.weight_zero_point")
            packed_zp = zp.dtype == torch.int32 and zp.dim() == 2 and zp.shape[0] == -(-n // 8)
            if bool(((unpack_ct_zeros(zp, n) if packed_zp else zp) != 0).any()):
                raise ModelLoadError(f"{prefix}: symmetric scheme but weight_zero_point is not zero")
        elif not scheme.symmetric:
            zp = get(f"{prefix}.weight_zero_point")
            if zp.dtype != torch.int32 or tuple(zp.shape) != (-(-n // 8), k // g):
                raise ModelLoadError(f"{prefix}.weight_zero_point must be int32 {[-(-n // 8), k // g]}, "
                                     f"got {zp.dtype} {list(zp.shape)}")
            zeros = unpack_ct_zeros(zp, n)
        return QuantizedTensor(q, scale.to(torch.float32).contiguous(), zeros, g)

    def info(self) -> QuantInfo:
        s = self.groups[0].scheme
        return QuantInfo(method="awq", format=self.format, bits=4, group_size=s.group_size or -1,
                         symmetric=s.symmetric)
