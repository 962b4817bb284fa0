"""Build a model on the meta device and fill it strictly from its safetensors checkpoint.

Rules: every model tensor comes from the checkpoint with its exact shape (or is computed, for
non-persistent buffers); every checkpoint tensor is used or matches the model's
`ignored_checkpoint_keys`; anything else is a ModelLoadError naming the tensors. Linear layers
read their weights through the checkpoint's QuantConfig and then get a kernel for the device.

The hooks a model declares (models/base.py): `CausalLM.tied_linears`, `CausalLM.fp32_params`,
`CausalLM.ignored_checkpoint_keys`, `CausalLM.checkpoint_name`, and `CausalLM.finalize`.
Computed tables (rotary cos/sin) are built lazily by their modules, never stored on meta.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from awqserve.config.engine_config import WeightLayout
from awqserve.config.model_config import ModelConfig
from awqserve.errors import ModelLoadError
from awqserve.kernels.cuda_paths import prepare_for_device
from awqserve.layers.linear import Linear, LinearKernel
from awqserve.loader.checkpoint import CheckpointReader, ReadProgress
from awqserve.models.base import CausalLM
from awqserve.models.registry import resolve_model_class
from awqserve.quant.base import QuantConfig, QuantizedTensor, parse_quant_config
from awqserve.quant.kernels import KernelPolicy, logits_kernel, make_kernel

KernelFactory = Callable[["torch.Tensor | QuantizedTensor", torch.device, torch.dtype], LinearKernel]
_SHOW = 8  # names listed in an error before "…"
_STORED_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}


def load_model(model_dir: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
               weight_policy: str | KernelPolicy = "auto", progress: ReadProgress | None = None) -> CausalLM:
    """Load the model in `model_dir` onto `device` with activations/weights in `dtype`.

    `weight_policy` chooses the kernels: a WeightLayout name ("auto", "int4", "dense") or a KernelPolicy.
    `progress(bytes_read, total_bytes, "shard k/n")` is called after each tensor read (CheckpointReader).
    The returned model is in eval mode, has `quant_info` (QuantInfo), and holds no meta tensors.
    """
    config = ModelConfig.from_dir(model_dir)
    model_cls = resolve_model_class(config.architecture)
    quant = parse_quant_config(config.quantization_config)
    dev = torch.device(device)
    with torch.device("meta"):
        model: CausalLM = model_cls(config)
    policy = weight_policy if isinstance(weight_policy, KernelPolicy) else KernelPolicy(WeightLayout(weight_policy))
    factory: KernelFactory = lambda weight, device, dtype: make_kernel(weight, device, dtype, policy)  # noqa: E731
    # Each Linear gets its kernel as soon as it is read, so the unpacked checkpoint-side weights never
    # pile up in host memory.
    with CheckpointReader(config.path, on_read=progress) as reader, torch.no_grad():
        _check_missing(model, reader, quant)
        _load_plain_tensors(model, reader, dev, dtype)
        _load_linears(model, reader, quant, factory, dev, dtype)
        _check_leftovers(model, reader)
    with torch.no_grad():
        prepare_for_device(model, dev)  # CUDA: Triton attention + fused int4 experts; CPU: nothing
        _choose_logits_kernel(model, policy, dev, quantized=quant.info().method != "none")
        _check_materialised(model)
    model.quant_info = quant.info()
    return model.eval()


def _choose_logits_kernel(model: CausalLM, policy: KernelPolicy, dev: torch.device, quantized: bool) -> None:
    """Give the logits projection (`lm_head`) its own kernel choice (quant.kernels.logits_kernel)."""
    head = model.logits_linear()
    if head is not None and head.kernel is not None:
        head.kernel = logits_kernel(head.kernel, dev, policy.lm_head_mode, quantized=quantized)


# -- which tensors ------------------------------------------------------------------------------
def _linears(model: nn.Module) -> list[Linear]:
    return [m for m in model.modules() if isinstance(m, Linear)]


def _plain_tensors(model: nn.Module) -> list[tuple[str, nn.Module, str, bool]]:
    """(full name, owner, leaf, is_parameter) of every loadable parameter/persistent buffer outside Linears."""
    out = []
    for prefix, module in model.named_modules():
        if isinstance(module, Linear):
            continue
        for leaf in module._parameters:
            out.append((f"{prefix}.{leaf}" if prefix else leaf, module, leaf, True))
        for leaf in module._buffers:
            if leaf not in module._non_persistent_buffers_set:
                out.append((f"{prefix}.{leaf}" if prefix else leaf, module, leaf, False))
    return out


def _tie_target(model: CausalLM, name: str, reader: CheckpointReader) -> str | None:
    """Checkpoint tensor a tied Linear reuses, or None when the Linear has weights of its own."""
    target = model.tied_linears.get(name)
    if target is None or not model.config.tie_word_embeddings:
        return None
    own = any(k.startswith(f"{name}.") for k in reader.keys())
    return None if own else target


def _check_missing(model: CausalLM, reader: CheckpointReader, quant: QuantConfig) -> None:
    """Name every tensor we know we will need and the checkpoint lacks, all at once."""
    needed = [model.checkpoint_name(name) for name, *_ in _plain_tensors(model)]
    for name, linear in model.named_modules():
        if not isinstance(linear, Linear) or _tie_target(model, name, reader) is not None:
            continue
        for src in linear.source_names(name):
            if not quant.is_quantized(src):
                needed.append(f"{src}.weight")
            if linear.has_bias:
                needed.append(f"{src}.bias")
    missing = [n for n in dict.fromkeys(needed) if not reader.has(n)]
    if missing:
        raise ModelLoadError(f"checkpoint in {reader.model_dir} lacks {len(missing)} tensor(s) that "
                             f"{model.config.architecture} needs: {_names(missing)}")


def _names(names: list[str]) -> str:
    return ", ".join(names[:_SHOW]) + (f", … ({len(names) - _SHOW} more)" if len(names) > _SHOW else "")


# -- reading ------------------------------------------------------------------------------------
def _read_exact(reader: CheckpointReader, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    found = reader.shape(name)
    if found != tuple(shape):
        raise ModelLoadError(f"tensor {name!r} has shape {list(found)}, the model expects {list(shape)}")
    return reader.get(name)


def _load_plain_tensors(model: CausalLM, reader: CheckpointReader, dev: torch.device, dtype: torch.dtype) -> None:
    keep_fp32 = [re.compile(p) for p in model.fp32_params]
    done: dict[int, nn.Parameter | torch.Tensor] = {}  # old tensor id -> loaded (shared parameters)
    for name, module, leaf, is_param in _plain_tensors(model):
        old = module._parameters[leaf] if is_param else module._buffers[leaf]
        if old is None:
            continue
        if id(old) not in done:
            t = _read_exact(reader, model.checkpoint_name(name), tuple(old.shape))
            if t.is_floating_point():
                t = t.to(torch.float32 if any(p.fullmatch(name) for p in keep_fp32) else dtype)
            t = t.to(dev)
            done[id(old)] = nn.Parameter(t, requires_grad=False) if is_param else t
        if is_param:
            module._parameters[leaf] = done[id(old)]  # type: ignore[assignment]
        else:
            module._buffers[leaf] = done[id(old)]


def _load_linears(model: CausalLM, reader: CheckpointReader, quant: QuantConfig,
                  factory: KernelFactory, dev: torch.device, dtype: torch.dtype) -> None:
    for name, linear in list(model.named_modules()):
        if not isinstance(linear, Linear):
            continue
        target = _tie_target(model, name, reader)
        if target is not None:
            # The tied Linear gets the embedding in its stored dtype (a bf16 checkpoint keeps a bf16
            # lm_head, which the kernel chooser may run natively); upcasting bf16 back is exact.
            stored = _STORED_DTYPES.get(reader.dtype_name(target), dtype)
            linear.set_weight([_loaded_tensor(model, target).to(stored)], None)
        else:
            _read_linear(name, linear, reader, quant)
        linear.build_kernel(factory, dev, dtype)


def _read_linear(name: str, linear: Linear, reader: CheckpointReader, quant: QuantConfig) -> None:
    parts: list[torch.Tensor | QuantizedTensor] = []
    sources = linear.source_names(name)
    for src, rows in zip(sources, linear.out_sizes):
        part = quant.read_linear(src, reader.get, reader.has)
        if tuple(part.shape) != (rows, linear.in_features):
            raise ModelLoadError(f"weight of {src!r} has shape {list(part.shape)}, "
                                 f"the model expects {[rows, linear.in_features]}")
        parts.append(part)
    biases = None
    if linear.has_bias:
        biases = [_read_exact(reader, f"{src}.bias", (rows,)) for src, rows in zip(sources, linear.out_sizes)]
    linear.set_weight(parts, biases)


def _loaded_tensor(model: CausalLM, checkpoint_name: str) -> torch.Tensor:
    """The already-loaded model tensor stored under `checkpoint_name` (for tied weights)."""
    for name, param in model.named_parameters():
        if model.checkpoint_name(name) == checkpoint_name:
            return param.data
    raise ModelLoadError(f"tied weight {checkpoint_name!r} is not a parameter of {type(model).__name__}")


# -- after reading ------------------------------------------------------------------------------
def _check_leftovers(model: CausalLM, reader: CheckpointReader) -> None:
    ignored = [re.compile(p) for p in model.ignored_checkpoint_keys]
    left = [n for n in reader.unconsumed() if not any(p.fullmatch(n) for p in ignored)]
    if left:
        raise ModelLoadError(f"checkpoint in {reader.model_dir} has {len(left)} tensor(s) that "
                             f"{model.config.architecture} does not use: {_names(left)}")


def _check_materialised(model: nn.Module) -> None:
    stale = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if stale:
        raise ModelLoadError(f"model tensors left unloaded: {_names(stale)}")
