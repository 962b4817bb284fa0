"""`awqserve inspect`: parameters, bytes and a memory plan of a checkpoint, without reading weights.

Sources: config.json, and the safetensors headers when the directory has weights. A directory with
only config.json (e.g. to plan hardware for a model not downloaded yet) is inventoried from the
model class built on the meta device plus the config's quantization scheme, i.e. exactly the
tensors the loader would ask for (int4 scales assumed bf16, as llm-compressor writes them).

Counts: a quantized Linear counts N*K parameters (its packed words, scales and shape tensors are
bytes, not parameters). "Active per token" replaces the routed experts by their top-k share.
`mtp.*` (Qwen3-Next's multi-token-prediction head) is reported apart: the server does not load it.
Memory plan: weights as stored + an activation reserve; each sequence needs KV for the context
(attention layers, `kv_dtype`) plus its fixed recurrent state (GDN layers, float32).
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from awqserve.config.model_config import ModelConfig

DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
               "F8_E4M3": 1, "F8_E5M2": 1}
_TORCH_TO_ST = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}
QUANT_SUFFIXES = ("weight_packed", "weight_scale", "weight_shape", "weight_zero_point", "weight_g_idx",
                  "qweight", "qzeros", "scales")
ACTIVATION_RESERVE = 1 << 30  # as the CUDA runner keeps for activations and allocator slack
BLOCK = 16


@dataclass
class Tensor:
    name: str
    dtype: str  # safetensors dtype string
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_BYTES.get(self.dtype, 2)


@dataclass
class ModuleGroup:
    """Modules with the same name pattern (digits replaced by '*'), e.g. `model.layers.*.mlp.experts.*.up_proj`."""

    pattern: str
    kind: str  # "int4" or a float dtype
    count: int = 0
    params: int = 0
    bytes: int = 0


@dataclass
class Inventory:
    source: str  # "safetensors headers" or "config (meta model)"
    params: int = 0
    params_mtp: int = 0
    routed_expert_params: int = 0
    bytes_by_kind: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    params_by_kind: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    groups: dict[tuple[str, str], ModuleGroup] = field(default_factory=dict)
    weight_bytes: int = 0  # everything the server loads (no MTP)

    def add(self, module: str, kind: str, params: int, nbytes: int) -> None:
        if module.startswith("mtp."):
            self.params_mtp += params
            return
        self.params += params
        self.weight_bytes += nbytes
        self.bytes_by_kind[kind] += nbytes
        self.params_by_kind[kind] += params
        if ".mlp.experts." in f"{module}.":
            self.routed_expert_params += params
        key = (re.sub(r"\.\d+(?=\.|$)", ".*", module), kind)
        g = self.groups.setdefault(key, ModuleGroup(*key))
        g.count += 1
        g.params += params
        g.bytes += nbytes


def _from_headers(tensors: list[Tensor]) -> Inventory:
    inv = Inventory("safetensors headers")
    by_module: dict[str, dict[str, Tensor]] = defaultdict(dict)
    for t in tensors:
        module, _, leaf = t.name.rpartition(".")
        by_module[module if leaf in QUANT_SUFFIXES else t.name][leaf] = t
    for module, parts in by_module.items():
        if "weight_packed" in parts:  # compressed-tensors int4: [N, K/8] int32
            n, words = parts["weight_packed"].shape
            inv.add(module, "int4", n * words * 8, sum(p.nbytes for p in parts.values()))
        elif "qweight" in parts:  # AutoAWQ gemm: [K, N/8] int32
            k, words = parts["qweight"].shape
            inv.add(module, "int4", k * words * 8, sum(p.nbytes for p in parts.values()))
        else:
            (t,) = parts.values()
            inv.add(t.name.rpartition(".")[0] if t.name.endswith(".weight") else t.name, t.dtype.lower(),
                    math.prod(t.shape), t.nbytes)
    return inv


def _meta_model(config: ModelConfig) -> torch.nn.Module:
    from awqserve.models.registry import resolve_model_class

    with torch.device("meta"):
        return resolve_model_class(config.architecture)(config)


def _from_config(config: ModelConfig, model: torch.nn.Module) -> Inventory:
    """The tensors the loader would read, from the model class on meta and the quantization scheme."""
    from awqserve.layers.linear import Linear
    from awqserve.quant.base import parse_quant_config

    quant = parse_quant_config(config.quantization_config)
    dtype = config.torch_dtype
    fp32 = [re.compile(p) for p in getattr(model, "fp32_params", ())]
    tied = getattr(model, "tied_linears", {}) if config.tie_word_embeddings else {}
    group = _group_size(config)
    inv = Inventory("config (meta model)")
    for name, module in model.named_modules():
        if isinstance(module, Linear):
            if name in tied:
                continue
            for src, rows in zip(module.source_names(name), module.out_sizes):
                k = module.in_features
                if quant.is_quantized(src):
                    g = group or k
                    nbytes = rows * math.ceil(k / 8) * 4 + rows * (k // g) * 2 + 16
                    inv.add(src, "int4", rows * k, nbytes)
                else:
                    elem = torch.empty((), dtype=dtype).element_size()
                    inv.add(src, _TORCH_TO_ST[dtype].lower(), rows * k, rows * k * elem)
            continue
        for leaf, p in module.named_parameters(recurse=False):
            full = f"{name}.{leaf}" if name else leaf
            pd = torch.float32 if any(r.fullmatch(full) for r in fp32) else dtype
            n = p.numel()
            inv.add(full.rpartition(".")[0] if leaf == "weight" else full, _TORCH_TO_ST[pd].lower(), n,
                    n * torch.empty((), dtype=pd).element_size())
    return inv


def _group_size(config: ModelConfig) -> int | None:
    qc = config.quantization_config or {}
    for g in (qc.get("config_groups") or {}).values():
        w = g.get("weights") or {}
        if w.get("strategy", "group") == "group" and w.get("group_size"):
            return int(w["group_size"])
        return None
    gs = qc.get("group_size")
    return int(gs) if gs else None


@dataclass
class MemoryPlan:
    budget: int
    free_for_cache: int  # budget - weights - activation reserve (may be negative)
    seqs_at_limit: int
    seqs_by_context: dict[int, int]


@dataclass
class Report:
    model_dir: Path
    architecture: str
    layer_kinds: dict[str, int]
    inv: Inventory
    active_params: int
    max_model_len: int
    kv_dtype: str
    kv_bytes_per_token: int
    state_bytes_per_seq: int
    plans: list[MemoryPlan]

    def seq_bytes(self, context: int) -> int:
        """Cache bytes one sequence of `context` tokens needs (KV in whole 16-token blocks + state)."""
        return math.ceil(context / BLOCK) * BLOCK * self.kv_bytes_per_token + self.state_bytes_per_seq


def _kind_counts(model: torch.nn.Module) -> dict[str, int]:
    kinds = getattr(model, "kinds", None)
    if kinds is None:
        return {"full_attention": len(model.cache_spec().attention)}
    return {k: list(kinds).count(k) for k in dict.fromkeys(kinds)}


def inspect_model(model_dir: str | Path, *, budgets: list[int] = (), max_model_len: int | None = None,
                  kv_dtype: torch.dtype = torch.bfloat16, contexts: tuple[int, ...] = (4096, 32768)) -> Report:
    """Everything `awqserve inspect` prints, computed from config.json and safetensors headers only."""
    from awqserve.loader.checkpoint import CheckpointReader

    config = ModelConfig.from_dir(model_dir)
    model = _meta_model(config)
    if any(Path(model_dir).glob("*.safetensors")):
        with CheckpointReader(model_dir) as reader:
            inv = _from_headers([Tensor(n, d, s) for n, (d, s) in reader.header_info().items()])
    else:
        inv = _from_config(config, model)
    experts = int(config.get("num_experts") or config.get("num_local_experts") or 0)
    top_k = int(config.get("num_experts_per_tok") or 0)
    active = inv.params - (inv.routed_expert_params * (experts - top_k) // experts if experts else 0)
    spec = model.cache_spec()
    elem = torch.empty((), dtype=kv_dtype).element_size()
    kv_tok = sum(2 * s.num_kv_heads * s.head_dim * elem for s in spec.attention)
    state = sum(math.prod(s.conv_shape) * torch.empty((), dtype=s.conv_dtype).element_size()
                + math.prod(s.recurrent_shape) * torch.empty((), dtype=s.recurrent_dtype).element_size()
                for s in spec.state)
    limit = max_model_len or config.max_position_embeddings
    report = Report(Path(model_dir), config.architecture, _kind_counts(model), inv, active, limit,
                    _TORCH_TO_ST.get(kv_dtype, str(kv_dtype)).lower(), kv_tok, state, [])
    for budget in budgets:
        free = budget - inv.weight_bytes - ACTIVATION_RESERVE
        fit = lambda ctx: max(0, free // report.seq_bytes(ctx))  # noqa: E731
        report.plans.append(MemoryPlan(budget, free, fit(limit),
                                       {c: fit(c) for c in sorted({*contexts, limit}) if c <= limit}))
    return report


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError


def _count(n: float) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n:,.0f}"


def format_report(r: Report, max_groups: int = 40) -> str:
    inv = r.inv
    lines = [f"model: {r.model_dir}  ({r.architecture}; from {inv.source}, no weights read)",
             "layers: " + ", ".join(f"{n} {k}" for k, n in r.layer_kinds.items()),
             f"parameters: {_count(inv.params)} loaded"
             + (f" (+{_count(inv.params_mtp)} MTP head, not loaded)" if inv.params_mtp else ""),
             f"active per token: {_count(r.active_params)}"
             + (f" (routed experts {_count(inv.routed_expert_params)} in total)" if inv.routed_expert_params else ""),
             f"weights: {_size(inv.weight_bytes)}"]
    for kind in sorted(inv.bytes_by_kind, key=lambda k: -inv.bytes_by_kind[k]):
        lines.append(f"  {kind:>5}: {_count(inv.params_by_kind[kind]):>8} params  {_size(inv.bytes_by_kind[kind]):>11}")
    lines.append("modules (quantized int4 vs float):")
    groups = sorted(inv.groups.values(), key=lambda g: -g.bytes)
    for g in groups[:max_groups]:
        lines.append(f"  {g.kind:>5}  {g.count:>6} x  {_count(g.params):>8} params  {_size(g.bytes):>11}  {g.pattern}")
    if len(groups) > max_groups:
        lines.append(f"  … {len(groups) - max_groups} more groups")
    lines += [f"cache per sequence: KV {_size(r.kv_bytes_per_token)}/token ({r.kv_dtype})"
              + (f" + recurrent state {_size(r.state_bytes_per_seq)} (fixed)" if r.state_bytes_per_seq else ""),
              f"  at the context limit ({r.max_model_len:,} tokens): {_size(r.seq_bytes(r.max_model_len))}"]
    for p in r.plans:
        lines.append(f"memory {_size(p.budget)}: weights {_size(inv.weight_bytes)} + reserve "
                     f"{_size(ACTIVATION_RESERVE)} leaves {_size(max(p.free_for_cache, 0))} for caches")
        lines.append("  concurrent sequences: " + ", ".join(
            f"{n} at {c:,} tokens" for c, n in p.seqs_by_context.items()))
    return "\n".join(lines)

