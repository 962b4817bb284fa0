"""`--load-format dummy` (vLLM's name): a model at a checkpoint's exact shapes from its config.json alone.

Every tensor the real loader would fill gets random values made on the target device instead: int4
Linears (as the config's quantization scheme says, module by module) as random nibbles and scales,
float Linears and plain parameters in the model dtype (float32 where the model keeps them so). So the
real 80B shape can be measured with no download, and `device="meta"` builds it with no memory at all,
for byte accounting.

Scales keep activations finite through any depth: a random int4 weight has E[q²] = 21.5 for
q uniform in -8..7, so scale 1/sqrt(21.5·K) (and std 1/sqrt(K) for float weights) keeps each output's
variance near its input's; zero-centred norms start at 0 (scale 1), other norms at 1, the embedding at
std 1, GDN decays as transformers initialises them. The numbers mean nothing; shapes, dtypes, bytes
and kernels are exactly the real model's.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from awqserve.config.engine_config import WeightLayout
from awqserve.config.model_config import ModelConfig
from awqserve.kernels.cuda_paths import prepare_for_device
from awqserve.layers.embedding import VocabEmbedding
from awqserve.layers.linear import Linear, LinearKernel
from awqserve.models.base import CausalLM
from awqserve.models.registry import resolve_model_class
from awqserve.quant.base import QuantConfig, QuantizedTensor, parse_quant_config
from awqserve.quant.kernels import KernelPolicy, make_kernel

INT4_SECOND_MOMENT = 21.5  # mean of q² over q in -8..7
KernelFactory = Callable[["torch.Tensor | QuantizedTensor", torch.device, torch.dtype], LinearKernel]


def load_dummy_model(model_dir: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16,
                     weight_policy: str | KernelPolicy = "auto", seed: int = 0,
                     kernel_factory: KernelFactory | None = None) -> CausalLM:
    """Build the model in `model_dir` (only config.json is read) with random weights on `device`.

    Kernels are chosen as for a real checkpoint (`make_kernel` with `weight_policy`), then the CUDA
    paths are selected as the real loader does (`kernels.cuda_paths.prepare_for_device`). On "meta"
    int4 weights take the CUDA layout (Triton W4A16, one int4 copy): the bytes of a GPU deployment.
    `kernel_factory` replaces the kernel choice (tests: the Triton kernels on CPU tensors).
    """
    config = ModelConfig.from_dir(model_dir)
    quant = parse_quant_config(config.quantization_config)
    dev = torch.device(device)
    with torch.device("meta"):
        model: CausalLM = resolve_model_class(config.architecture)(config)
    gen = None if dev.type == "meta" else torch.Generator(device=dev).manual_seed(seed)
    policy = weight_policy if isinstance(weight_policy, KernelPolicy) else KernelPolicy(WeightLayout(weight_policy))
    factory = kernel_factory or (_meta_factory if dev.type == "meta" else (
        lambda w, d, t: make_kernel(w, d, t, policy)))  # noqa: E731
    with torch.no_grad():
        _fill_plain(model, dev, dtype, gen)
        _fill_linears(model, config, quant, factory, dev, dtype, gen)
        prepare_for_device(model, dev)
    model.quant_info = quant.info()
    return model.eval()


def _meta_factory(weight: "torch.Tensor | QuantizedTensor", device: torch.device, dtype: torch.dtype) -> LinearKernel:
    """On meta: the CUDA layout (Triton int4 where it applies, else a dense weight), shapes only."""
    from awqserve.kernels.w4a16_kernel import TritonW4A16Kernel
    from awqserve.layers.linear import DenseKernel

    if isinstance(weight, QuantizedTensor):
        try:
            return TritonW4A16Kernel.from_quantized(weight, device, dtype)
        except ValueError:
            return DenseKernel(torch.empty(weight.shape, dtype=dtype, device=device))
    return DenseKernel(weight.to(dtype))


def _normal(shape: tuple[int, ...], std: float, dev: torch.device, dtype: torch.dtype,
            gen: torch.Generator | None) -> torch.Tensor:
    if gen is None:
        return torch.empty(shape, dtype=dtype, device=dev)
    return (torch.randn(shape, generator=gen, device=dev, dtype=torch.float32) * std).to(dtype)


def _plain_value(owner: nn.Module, leaf: str, shape: tuple[int, ...], dev: torch.device, dtype: torch.dtype,
                 gen: torch.Generator | None) -> torch.Tensor:
    if gen is None:
        return torch.empty(shape, dtype=dtype, device=dev)
    if hasattr(owner, "zero_centered"):
        return torch.zeros(shape, dtype=dtype, device=dev) if owner.zero_centered else torch.ones(shape, dtype=dtype, device=dev)
    if "Norm" in type(owner).__name__:
        return torch.ones(shape, dtype=dtype, device=dev)
    if leaf == "A_log":  # decay rates e^A in [1, 16], as transformers initialises them
        a = torch.rand(shape, generator=gen, device=dev) * 15 + 1
        return a.log().to(dtype)
    if leaf == "dt_bias":
        return torch.ones(shape, dtype=dtype, device=dev)
    std = 1.0 if isinstance(owner, VocabEmbedding) else 1 / math.sqrt(shape[-1])
    return _normal(shape, std, dev, dtype, gen)


def _fill_plain(model: CausalLM, dev: torch.device, dtype: torch.dtype, gen: torch.Generator | None) -> None:
    import re

    keep_fp32 = [re.compile(p) for p in model.fp32_params]
    for prefix, module in model.named_modules():
        if isinstance(module, Linear):
            continue
        for leaf, old in list(module._parameters.items()):
            if old is None:
                continue
            name = f"{prefix}.{leaf}" if prefix else leaf
            pd = torch.float32 if any(p.fullmatch(name) for p in keep_fp32) else dtype
            value = _plain_value(module, leaf, tuple(old.shape), dev, pd, gen)
            module._parameters[leaf] = nn.Parameter(value, requires_grad=False)


def _random_int4(rows: int, k: int, group: int, symmetric: bool, dev: torch.device,
                 gen: torch.Generator | None) -> QuantizedTensor:
    scale = 1 / math.sqrt(INT4_SECOND_MOMENT * k)
    if gen is None:
        q = torch.empty((rows, k), dtype=torch.int8, device=dev)
        s = torch.empty((rows, k // group), dtype=torch.float32, device=dev)
        return QuantizedTensor(q, s, None if symmetric else torch.empty_like(s, dtype=torch.int8), group)
    q = torch.randint(-8, 8, (rows, k), generator=gen, device=dev, dtype=torch.int8)
    s = torch.full((rows, k // group), scale, device=dev)
    zeros = None if symmetric else torch.randint(-1, 2, (rows, k // group), generator=gen, device=dev,
                                                 dtype=torch.int8)
    return QuantizedTensor(q, s, zeros, group)


def _scheme(config: ModelConfig) -> tuple[int | None, bool]:
    """(group size or None for channel-wise, symmetric) of the config's int4 weights."""
    qc = config.quantization_config or {}
    for g in (qc.get("config_groups") or {}).values():
        w = g.get("weights") or {}
        group = int(w["group_size"]) if w.get("strategy", "group") == "group" and w.get("group_size") else None
        return group, bool(w.get("symmetric", True))
    return (int(qc["group_size"]) if qc.get("group_size") else None), not qc.get("zero_point", False)


def _fill_linears(model: CausalLM, config: ModelConfig, quant: QuantConfig, factory: KernelFactory,
                  dev: torch.device, dtype: torch.dtype, gen: torch.Generator | None) -> None:
    group, symmetric = _scheme(config)
    tied = model.tied_linears if config.tie_word_embeddings else {}
    for name, linear in list(model.named_modules()):
        if not isinstance(linear, Linear):
            continue
        if name in tied:
            emb = next(p for n, p in model.named_parameters() if model.checkpoint_name(n) == tied[name])
            linear.set_weight([emb.data], None)
            linear.build_kernel(factory, dev, dtype)
            continue
        # Random parts concatenated are random: draw the fused weight at once (as Linear.set_weight
        # would fuse it: int4 when every source is int4, else one float weight).
        rows, k = linear.out_features, linear.in_features
        if all(quant.is_quantized(src) for src in linear.source_names(name)):
            weight: torch.Tensor | QuantizedTensor = _random_int4(rows, k, group or k, symmetric, dev, gen)
        else:
            weight = _normal((rows, k), 1 / math.sqrt(k), dev, dtype, gen)
        linear.kernel = factory(weight, dev, dtype)
        if linear.has_bias:
            linear.bias = nn.Parameter(torch.zeros(rows, device=dev, dtype=dtype), requires_grad=False)
