"""AWQ quantization of a float Llama / Qwen2 / Qwen3 model, layer by layer on CPU.

Pipeline (AWQ_FORMATS.md §5): run the float model on calibration tokens up to the first decoder
layer, then for each layer: run it once with hooks capturing the inputs of its linears; search a
per-channel scale for each group of linears sharing an input and fold 1/s into the op that produces
that input (an RMSNorm weight or the previous linear's output rows); search per-group clipping;
quantize. The next layer's input is the float output of this layer (scaling does not change it).

Scale groups per decoder layer (module names relative to the layer):
  q|k|v   after input_layernorm;  o after v (only when v's outputs are o's inputs, i.e. no GQA);
  gate|up after post_attention_layernorm;  down after up (1/s folds into up_proj's rows).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from awqserve.errors import UnsupportedError
from awqserve.quant.base import QuantizedTensor
from awqserve.quant.packing import quantize_rtn
from awqserve.tools.awq import search
from awqserve.tools.awq.search import QuantSpec

logger = logging.getLogger(__name__)
LayerProgress = Callable[[float, float, str], None]  # (layers done, layers, "AWQ layer 3/30")
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


@dataclass(frozen=True)
class AwqOptions:
    """Knobs of one AWQ run; defaults fit the 2-core CPU budget of the demo build (see docs)."""

    group_size: int = 128
    symmetric: bool = True
    num_samples: int = 32  # calibration windows …
    seq_len: int = 128  # … of this many tokens
    n_grid: int = 20  # alpha grid of the scale search
    search_tokens: int = 256  # token subsample on which the scale loss is measured
    clip_steps: int = 10  # shrink ratios 1.0, 0.95, …, 0.55
    clip_qk: bool = False  # like AutoAWQ: q/k outputs go through softmax, clip them not
    seed: int = 0

    def __post_init__(self) -> None:
        if self.group_size <= 0 or self.num_samples <= 0 or self.seq_len <= 0 or self.n_grid <= 0:
            raise ValueError("group_size, num_samples, seq_len and n_grid must be positive")

    @property
    def spec(self) -> QuantSpec:
        return QuantSpec(self.group_size, self.symmetric)


@dataclass(frozen=True)
class ScaleGroup:
    prev: str | None  # module producing the shared input (a norm or a linear); None: nothing to fold into
    linears: tuple[str, ...]


@dataclass
class AwqResult:
    """Quantized linears by full module name, plus per-layer output MSE of RTN vs AWQ by group, and
    the search's decisions (`recipe`: per layer, the folded scales by the group's first linear and
    the clip-ratio index per (row, group) by linear), from which `run_awq(recipe=…)` rebuilds `quantized`."""

    quantized: dict[str, QuantizedTensor] = field(default_factory=dict)
    layer_errors: list[dict[str, tuple[float, float]]] = field(default_factory=list)
    alphas: list[dict[str, float]] = field(default_factory=list)
    recipe: dict[str, torch.Tensor] = field(default_factory=dict)


class _Stop(Exception):
    pass


def check_supported(model: nn.Module) -> None:
    model_type = getattr(model.config, "model_type", "")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedError(f"AWQ quantization of model_type {model_type!r} (supported: {SUPPORTED_MODEL_TYPES})")


def scale_groups(layer: nn.Module) -> list[ScaleGroup]:
    groups = [ScaleGroup("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"))]
    v, o = layer.get_submodule("self_attn.v_proj"), layer.get_submodule("self_attn.o_proj")
    # GQA makes v narrower than o's input: nothing to fold into, so o is only clipped and quantized
    groups.append(ScaleGroup("self_attn.v_proj" if v.out_features == o.in_features else None, ("self_attn.o_proj",)))
    groups.append(ScaleGroup("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")))
    groups.append(ScaleGroup("mlp.up_proj", ("mlp.down_proj",)))
    return groups


def first_layer_inputs(model: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
    """Hidden states entering decoder layer 0 and the keyword arguments the model passes to it."""
    captured: dict[str, Any] = {}

    def hook(_mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        captured["x"] = args[0] if args else kwargs.pop("hidden_states")
        captured["kwargs"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        raise _Stop

    handle = model.model.layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model(input_ids=ids, use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    kwargs = captured["kwargs"]
    kwargs["use_cache"] = False
    for key in ("past_key_values", "past_key_value", "cache"):  # no KV cache across calibration calls
        if kwargs.get(key) is not None:
            kwargs[key] = None
    return captured["x"], kwargs


def run_layer(layer: nn.Module, x: torch.Tensor, kwargs: dict[str, Any],
              capture: tuple[str, ...] = ()) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Layer output and the flattened inputs [T, K] of the named submodules."""
    inputs: dict[str, torch.Tensor] = {}
    handles = [layer.get_submodule(name).register_forward_hook(
        lambda _m, a, _o, name=name: inputs.__setitem__(name, a[0].reshape(-1, a[0].shape[-1])))
        for name in capture]
    try:
        out = layer(x, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return (out[0] if isinstance(out, tuple) else out), inputs


def fold_scale(layer: nn.Module, group: ScaleGroup, s: torch.Tensor) -> None:
    """W <- W diag(s) for the group's linears, and 1/s into the producer of their shared input."""
    prev = layer.get_submodule(group.prev)
    if isinstance(prev, nn.Linear):
        prev.weight.div_(s.unsqueeze(1))
        if prev.bias is not None:
            prev.bias.div_(s)
    elif type(prev).__name__.endswith("RMSNorm") and prev.weight.shape == s.shape:
        prev.weight.div_(s)  # Llama/Qwen RMSNorm computes weight * x_hat, so this is exact
    else:
        raise UnsupportedError(f"cannot fold AWQ scales into {type(prev).__name__} ({group.prev})")
    for name in group.linears:
        layer.get_submodule(name).weight.mul_(s)


def final_quantize(w: torch.Tensor, spec: QuantSpec, scale_dtype: torch.dtype) -> QuantizedTensor:
    """§1 round-to-nearest, then scales rounded to the stored dtype and q recomputed against them.

    Recomputing q keeps the checkpoint self-consistent: dequantization uses the stored scale.
    """
    qt = quantize_rtn(w, spec.group_size, spec.symmetric)
    s = qt.scales.to(scale_dtype).to(torch.float32)
    s = torch.where(s > 0, s, torch.ones_like(s))
    wg = spec.groups(w.to(torch.float32))
    zp = qt.zeros.to(torch.float32).unsqueeze(-1) if qt.zeros is not None else 0.0
    q = torch.clamp(torch.round(wg / s.unsqueeze(-1) + zp), -8, 7).to(torch.int8).reshape(w.shape)
    return QuantizedTensor(q, s, qt.zeros, spec.group_size)


def clip_by_choice(w: torch.Tensor, choice: torch.Tensor, spec: QuantSpec, steps: int) -> torch.Tensor:
    """W clamped per (row, group) to its range shrunk by ratio index `choice` (0 = no clipping)."""
    return search.apply_clip(w, *search.chosen_ranges(w, choice, spec, steps), spec)


def _clipped(w: torch.Tensor, gram: torch.Tensor, x: torch.Tensor, spec: QuantSpec,
             steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """W clipped per group, unless that makes the whole output worse on the searched tokens; and the
    ratio index per (row, group) it applied (all 0 when the guard kept W).

    Each group's clip is chosen on its own partial output; the guard catches the rare case where
    cross-group error terms make the combined output worse than not clipping at all.
    """
    choice = search.search_clip_choice(w, gram, spec, steps)
    clipped = clip_by_choice(w, choice, spec, steps)
    ref = x @ w.t()
    if search.output_mse(search.fake_quantize(clipped, spec), x, ref) <= \
            search.output_mse(search.fake_quantize(w, spec), x, ref):
        return clipped, choice
    return w, torch.zeros_like(choice)


def check_group_size(model: nn.Module, group_size: int) -> None:
    for name, mod in model.model.layers.named_modules():
        if isinstance(mod, nn.Linear) and mod.in_features % group_size:
            raise UnsupportedError(f"group size {group_size} does not divide the {mod.in_features} inputs of "
                                   f"layers.{name}; choose a group size dividing every linear's in_features")


def _subsample(num_tokens: int, wanted: int, seed: int) -> torch.Tensor:
    if wanted >= num_tokens:
        return torch.arange(num_tokens)
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(num_tokens, generator=gen)[:wanted].sort().values


@torch.no_grad()
def quantize_layer(layer: nn.Module, x: torch.Tensor, kwargs: dict[str, Any], opts: AwqOptions,
                   prefix: str, result: AwqResult, scale_dtype: torch.dtype) -> torch.Tensor:
    """AWQ one decoder layer in place (scaled + clipped float weights); returns its float output."""
    spec, groups = opts.spec, scale_groups(layer)
    out, inputs = run_layer(layer, x, kwargs, tuple(g.linears[0] for g in groups))
    pick = _subsample(x.shape[0] * x.shape[1], opts.search_tokens, opts.seed)
    orig = {n: layer.get_submodule(n).weight.clone() for g in groups for n in g.linears}
    in_scale: dict[str, torch.Tensor] = {}
    alphas: dict[str, float] = {}
    for g in groups:  # search every scale on the unscaled layer first, then fold them all
        xg = inputs[g.linears[0]]
        if g.prev is None:
            scales, alphas["|".join(g.linears)] = torch.ones(xg.shape[1], dtype=xg.dtype), 0.0
        else:
            res = search.search_scale(torch.cat([orig[n] for n in g.linears]), xg.abs().mean(0), xg[pick],
                                      spec, opts.n_grid)
            scales, alphas["|".join(g.linears)] = res.scales, res.alpha
        for n in g.linears:
            in_scale[n] = scales
    for g in groups:
        if g.prev is not None:
            fold_scale(layer, g, in_scale[g.linears[0]])
            result.recipe[f"{prefix}.{g.linears[0]}.scale"] = in_scale[g.linears[0]].clone()
    for g in groups:
        xs = inputs[g.linears[0]] / in_scale[g.linears[0]]
        gram = search.group_gram(xs, spec.group_size)
        for n in g.linears:
            lin = layer.get_submodule(n)
            if _clips(n, opts):
                clipped, choice = _clipped(lin.weight, gram, xs[pick], spec, opts.clip_steps)
                lin.weight.copy_(clipped)
                result.recipe[f"{prefix}.{n}.clip"] = choice
            result.quantized[f"{prefix}.{n}"] = final_quantize(lin.weight, spec, scale_dtype)
    result.layer_errors.append(_group_errors(groups, inputs, pick, orig, in_scale, spec, scale_dtype, prefix, result))
    result.alphas.append(alphas)
    return out


def _clips(name: str, opts: AwqOptions) -> bool:
    return opts.clip_steps > 1 and (opts.clip_qk or name.split(".")[-1] not in ("q_proj", "k_proj"))


@torch.no_grad()
def apply_recipe_layer(layer: nn.Module, recipe: dict[str, torch.Tensor], opts: AwqOptions, prefix: str,
                       result: AwqResult, scale_dtype: torch.dtype) -> None:
    """Rebuild one layer's AWQ result from recorded decisions, with no calibration forward pass:
    the same folds, clamps and rounding as `quantize_layer`, so the same int4 weights (bit-exact on
    the same float weights). Raises KeyError when the recipe lacks an entry this layer needs."""
    spec = opts.spec
    for g in scale_groups(layer):
        if g.prev is not None:
            fold_scale(layer, g, recipe[f"{prefix}.{g.linears[0]}.scale"])
    for g in scale_groups(layer):
        for n in g.linears:
            lin = layer.get_submodule(n)
            if _clips(n, opts):
                lin.weight.copy_(clip_by_choice(lin.weight, recipe[f"{prefix}.{n}.clip"], spec, opts.clip_steps))
            result.quantized[f"{prefix}.{n}"] = final_quantize(lin.weight, spec, scale_dtype)


def _group_errors(groups: list[ScaleGroup], inputs: dict[str, torch.Tensor], pick: torch.Tensor,
                  orig: dict[str, torch.Tensor], in_scale: dict[str, torch.Tensor], spec: QuantSpec,
                  scale_dtype: torch.dtype, prefix: str, result: AwqResult) -> dict[str, tuple[float, float]]:
    """Output MSE on the searched tokens of plain RTN and of the final AWQ weights, per group.

    AWQ weights are mapped back to the original model's space (undo 1/s on inputs and the next
    group's scale folded into rows), so both errors are against the same reference W x.
    """
    row_scale = {g.prev: in_scale[g.linears[0]] for g in groups if g.prev and g.prev.endswith("_proj")}
    errors = {}
    for g in groups:
        x = inputs[g.linears[0]][pick]
        w = torch.cat([orig[n] for n in g.linears])
        ref = x @ w.t()
        rtn = torch.cat([final_quantize(orig[n], spec, scale_dtype).dequantize() for n in g.linears])
        eff = []
        for n in g.linears:
            wq = result.quantized[f"{prefix}.{n}"].dequantize() / in_scale[n]
            eff.append(wq * row_scale[n].unsqueeze(1) if n in row_scale else wq)
        errors["|".join(g.linears)] = (search.output_mse(rtn, x, ref), search.output_mse(torch.cat(eff), x, ref))
    return errors


@torch.no_grad()
def run_awq(model: nn.Module, ids: torch.Tensor | None, opts: AwqOptions,
            scale_dtype: torch.dtype = torch.bfloat16, progress: LayerProgress | None = None,
            recipe: dict[str, torch.Tensor] | None = None) -> AwqResult:
    """AWQ-quantize every decoder-layer linear of a float32 CPU model (mutates the model).

    `progress(done, layers, detail)` is called after each decoder layer. With a `recipe` (an earlier
    run's `AwqResult.recipe` on the same weights and options) the search is replayed instead of run:
    no calibration tokens (`ids` may be None), no forward passes, the same result.

    On return the model's linears hold the scaled and clipped float weights (not rounded), its
    norms and producer linears hold the folded 1/s, and `quantized` holds the int4 weights with
    scales already rounded to `scale_dtype` (the dtype they will be stored in).
    """
    check_supported(model)
    check_group_size(model, opts.group_size)
    model.eval()
    result = AwqResult()
    layers = model.model.layers
    if recipe is not None:
        for i, layer in enumerate(layers):
            apply_recipe_layer(layer, recipe, opts, f"model.layers.{i}", result, scale_dtype)
            if progress is not None:
                progress(i + 1, len(layers), f"AWQ layer {i + 1}/{len(layers)} (recorded search)")
        result.recipe = dict(recipe)
        return result
    assert ids is not None, "calibration tokens are needed without a recipe"
    x, kwargs = first_layer_inputs(model, ids)
    for i, layer in enumerate(layers):
        t0 = time.perf_counter()
        x = quantize_layer(layer, x, kwargs, opts, f"model.layers.{i}", result, scale_dtype)
        logger.debug("AWQ layer %d in %.2fs: %s", i, time.perf_counter() - t0, result.alphas[-1])
        if progress is not None:
            progress(i + 1, len(layers), f"AWQ layer {i + 1}/{len(layers)}")
    return result


def quantize_loaded_model(model: nn.Module, tokenizer: Any, output: Path, opts: AwqOptions,
                          calibration_text: str | None = None,
                          generation: dict[str, Any] | None = None, source_dtype: Any = None,
                          progress: LayerProgress | None = None,
                          recipe: dict[str, torch.Tensor] | None = None) -> AwqResult:
    """Calibrate, AWQ-quantize and write `model` (float32, CPU) as compressed-tensors into `output`.

    `source_dtype` (default: the model config's dtype) picks the stored dtype (writer.checkpoint_dtype).
    `progress` is run_awq's per-layer callback; `recipe` replays a recorded search (see run_awq).
    """
    from awqserve.tools.awq.calibration import calibration_samples
    from awqserve.tools.awq.writer import checkpoint_dtype, write_checkpoint

    dtype = checkpoint_dtype(source_dtype if source_dtype is not None else getattr(model.config, "dtype", None))
    t0 = time.perf_counter()
    ids = None if recipe is not None else calibration_samples(tokenizer, opts.num_samples, opts.seq_len,
                                                              calibration_text)
    t1 = time.perf_counter()
    result = run_awq(model, ids, opts, dtype, progress, recipe)
    t2 = time.perf_counter()
    write_checkpoint(model, tokenizer, result.quantized, output, opts.group_size, opts.symmetric, dtype, generation)
    logger.info("AWQ: calibration %.1fs, %s %.1fs, write %.1fs", t1 - t0,
                "recorded search replayed +quantize" if recipe is not None else "search+quantize", t2 - t1,
                time.perf_counter() - t2)
    return result


def quantize_checkpoint(src: str | Path, dst: str | Path, opts: AwqOptions,
                        calibration_text: str | None = None) -> AwqResult:
    """Load a float HF checkpoint directory, AWQ-quantize it and write it to `dst`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src_cfg = json.loads((Path(src) / "config.json").read_text())
    source_dtype = src_cfg.get("dtype") or src_cfg.get("torch_dtype")
    model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(src))
    generation = None
    if (Path(src) / "generation_config.json").is_file():
        generation = json.loads((Path(src) / "generation_config.json").read_text())
    return quantize_loaded_model(model, tokenizer, Path(dst), opts, calibration_text, generation, source_dtype)
