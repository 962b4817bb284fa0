"""Write an AWQ result as a compressed-tensors `pack-quantized` checkpoint (AWQ_FORMATS.md §1).

Output directory:
- model.safetensors: for each quantized Linear `<m>.weight_packed` int32 [N, K/8],
  `<m>.weight_scale` [N, K/G], `<m>.weight_shape` int64 [2], and `<m>.weight_zero_point` int32
  [N/8, K/G] when asymmetric; every other tensor (embeddings, norms, biases, an untied lm_head)
  as float. Float tensors and scales use the checkpoint dtype: the source's dtype when it is
  bf16 or fp16, otherwise bf16 (what llm-compressor writes for bf16 models). A tied lm_head is
  not stored (config.tie_word_embeddings says to reuse the embedding).
- config.json with `quantization_config` in compressed-tensors' own shape; generation_config.json;
  tokenizer files (tokenizer.json, tokenizer_config.json carrying the chat template, special_tokens_map.json).
Tensors are written in sorted name order so the file is byte-for-byte reproducible.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import save_file
from torch import nn

from awqserve.quant.base import QuantizedTensor
from awqserve.quant.packing import pack_ct_weight, pack_ct_zeros

_NOISE_KEYS = ("torch_dtype", "_name_or_path", "transformers_version", "id2label", "label2id",
               "chunk_size_feed_forward", "is_encoder_decoder", "output_attentions", "output_hidden_states",
               "problem_type", "return_dict")
_DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}


def checkpoint_dtype(source_dtype: Any) -> torch.dtype:
    """The dtype floats and scales are stored in: the source's if bf16/fp16, else bf16."""
    name = str(source_dtype).replace("torch.", "") if source_dtype is not None else ""
    return torch.float16 if name in ("float16", "fp16", "half") else torch.bfloat16


def quantization_config(group_size: int, symmetric: bool, ignore: list[str]) -> dict[str, Any]:
    """`quantization_config` exactly as compressed-tensors writes it for W4A16 group quantization."""
    weights = {"num_bits": 4, "type": "int", "symmetric": symmetric, "strategy": "group",
               "group_size": group_size, "dynamic": False, "actorder": None, "observer": "minmax",
               "block_structure": None, "observer_kwargs": {}}
    return {
        "quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "input_activations": None,
                                      "output_activations": None, "format": "pack-quantized"}},
        "ignore": ignore, "kv_cache_scheme": None, "global_compression_ratio": None,
    }


def quantized_tensors(name: str, qt: QuantizedTensor, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The compressed-tensors tensors of one quantized Linear `name`."""
    n, k = qt.shape
    out = {f"{name}.weight_packed": pack_ct_weight(qt.qweight),
           f"{name}.weight_scale": qt.scales.to(dtype),
           f"{name}.weight_shape": torch.tensor([n, k], dtype=torch.int64)}
    if qt.zeros is not None:
        out[f"{name}.weight_zero_point"] = pack_ct_zeros(qt.zeros)
    return out


def checkpoint_tensors(model: nn.Module, quantized: Mapping[str, QuantizedTensor],
                       dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """All tensors of the checkpoint, by name (float tensors cast to `dtype`)."""
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    tensors: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        module, _, leaf = name.rpartition(".")
        if (module in quantized and leaf == "weight") or (tied and name == "lm_head.weight"):
            continue
        tensors[name] = t.detach().to(dtype).contiguous().clone()
    for name in sorted(quantized):
        tensors.update(quantized_tensors(name, quantized[name], dtype))
    return dict(sorted(tensors.items()))


def untouched_linears(model: nn.Module, quantized: Mapping[str, QuantizedTensor]) -> list[str]:
    """Names of Linear modules left in float: they go to `ignore` (lm_head always, as llm-compressor)."""
    names = {n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n not in quantized}
    return sorted(names | {"lm_head"})


def write_config(model: nn.Module, output: Path, group_size: int, symmetric: bool, ignore: list[str],
                 dtype: torch.dtype) -> None:
    cfg = model.config.to_dict()
    if not cfg.get("architectures"):  # set by save_pretrained, absent on configs built in memory
        cfg["architectures"] = [type(model).__name__]
    for key in _NOISE_KEYS:  # transformers' generic PretrainedConfig fields, meaningless for a causal LM
        cfg.pop(key, None)
    cfg["dtype"] = _DTYPE_NAMES[dtype]
    cfg["quantization_config"] = quantization_config(group_size, symmetric, ignore)
    (output / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def write_generation_config(model: nn.Module, output: Path, generation: Mapping[str, Any] | None) -> None:
    cfg = model.config
    gen = dict(generation) if generation else {
        k: getattr(cfg, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id") if getattr(cfg, k, None) is not None}
    (output / "generation_config.json").write_text(json.dumps(gen, indent=2, sort_keys=True) + "\n")


def write_tokenizer(tokenizer: Any, output: Path, model_config: Any = None) -> None:
    """tokenizer.json + tokenizer_config.json (with the chat template inline) + special_tokens_map.json.

    `tokenizer_class` is set to PreTrainedTokenizerFast, which every transformers version loads
    straight from tokenizer.json.
    """
    tokenizer.save_pretrained(str(output))
    cfg_path = output / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    context = getattr(model_config, "max_position_embeddings", None)
    if context and cfg.get("model_max_length", 0) > context:  # transformers' "unset" is ~1e30
        cfg["model_max_length"] = int(context)
    for key in ("is_local", "local_files_only"):
        cfg.pop(key, None)
    if getattr(tokenizer, "chat_template", None):
        cfg["chat_template"] = tokenizer.chat_template
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    specials = {k: str(v) for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
    (output / "special_tokens_map.json").write_text(json.dumps(specials, indent=2, sort_keys=True) + "\n")


def write_checkpoint(model: nn.Module, tokenizer: Any, quantized: Mapping[str, QuantizedTensor], output: Path,
                     group_size: int, symmetric: bool, dtype: torch.dtype,
                     generation: Mapping[str, Any] | None = None) -> None:
    """Write the whole checkpoint directory (created if needed)."""
    output.mkdir(parents=True, exist_ok=True)
    weights = output / "model.safetensors"
    save_file(checkpoint_tensors(model, quantized, dtype), str(weights), metadata={"format": "pt"})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(weights, 0o666 & ~umask)  # safetensors creates the file 0600; make it like any other file
    write_config(model, output, group_size, symmetric, untouched_linears(model, quantized), dtype)
    write_generation_config(model, output, generation)
    if tokenizer is not None:
        write_tokenizer(tokenizer, output, model.config)


def dequantized_state_dict(model_dir: str | Path, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Read a checkpoint we wrote back into plain float `<m>.weight` tensors (for references/tests)."""
    from safetensors.torch import load_file

    from awqserve.quant.packing import unpack_ct_weight, unpack_ct_zeros

    cfg = json.loads((Path(model_dir) / "config.json").read_text())["quantization_config"]
    group = int(cfg["config_groups"]["group_0"]["weights"]["group_size"])
    raw = load_file(str(Path(model_dir) / "model.safetensors"))
    out: dict[str, torch.Tensor] = {}
    for name, t in raw.items():
        if name.endswith(".weight_packed"):
            m = name[: -len(".weight_packed")]
            n, k = (int(v) for v in raw[f"{m}.weight_shape"])
            zp = raw.get(f"{m}.weight_zero_point")
            qt = QuantizedTensor(unpack_ct_weight(t, k), raw[f"{m}.weight_scale"].float(),
                                 unpack_ct_zeros(zp, n) if zp is not None else None, group)
            out[f"{m}.weight"] = qt.dequantize(dtype)
        elif not name.rpartition(".")[2].startswith("weight_"):
            out[name] = t.to(dtype)
    return out
