"""Sparse mixture-of-experts block (Qwen3-MoE, Qwen3-Next): softmax router, top-k, experts, shared expert.

Checkpoint names (relative to the block, usually `model.layers.N.mlp`): `gate` (router [E, H]),
experts either per expert — `experts.E.{gate_proj,up_proj,down_proj}`, each a Linear that may be int4
or float as the checkpoint's quantization config says — or, as transformers 5 can write float
checkpoints, fused — `experts.gate_up_proj` [E, 2I, H] and `experts.down_proj` [E, H, I];
Qwen3-Next adds `shared_expert.{gate_proj,up_proj,down_proj}` and `shared_expert_gate` [1, H].

Dispatch (CPU, float experts): tokens are sorted by the expert they were routed to, and every expert
that received tokens runs once on all of its tokens (an [M_e, H] matmul); experts nobody chose are not
touched. On CUDA with int4 experts on the Triton kernel, `fuse_int4_experts` (called once after the
kernels are built) stacks them into `FusedInt4Experts`: two grouped launches per layer, no host sync.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from typing import TYPE_CHECKING, cast

from awqserve.layers.activation import SiluAndMul
from awqserve.layers.linear import Linear
from awqserve.layers.mlp import GatedMLP

if TYPE_CHECKING:
    from awqserve.kernels.moe_align import StackedW4A16

FUSED, PER_EXPERT = "fused", "per_expert"


@dataclass(frozen=True)
class MoEConfig:
    """Shape and routing of one sparse block; `shared_intermediate` > 0 adds a gated shared expert."""

    hidden_size: int
    intermediate_size: int
    num_experts: int
    top_k: int
    norm_topk_prob: bool
    shared_intermediate: int = 0
    expert_layout: str = PER_EXPERT


class FusedExperts(nn.Module):
    """Float experts stored stacked: gate_up_proj [E, 2I, H] (gate rows first), down_proj [E, H, I]."""

    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * intermediate_size, hidden_size),
                                         requires_grad=False)
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden_size, intermediate_size), requires_grad=False)
        self.act = SiluAndMul()

    def run(self, e: int, x: torch.Tensor) -> torch.Tensor:
        h = F.linear(x.to(self.gate_up_proj.dtype), self.gate_up_proj[e])
        return F.linear(self.act(h), self.down_proj[e]).to(x.dtype)


class FusedInt4Experts(nn.Module):
    """All routed experts of one layer as two stacked int4 weights (kernels.moe_align.StackedW4A16):
    gate|up [E, 2I, H] and down [E, H, I], run by the Triton fused-MoE kernels."""

    w13_qweight: torch.Tensor
    w13_scales: torch.Tensor
    w13_zeros: torch.Tensor | None
    w2_qweight: torch.Tensor
    w2_scales: torch.Tensor
    w2_zeros: torch.Tensor | None

    def __init__(self, w13: "StackedW4A16", w2: "StackedW4A16") -> None:
        super().__init__()
        self.group13, self.group2 = w13.group_size, w2.group_size
        for name, w in (("w13", w13), ("w2", w2)):
            self.register_buffer(f"{name}_qweight", w.qweight, persistent=False)
            self.register_buffer(f"{name}_scales", w.scales, persistent=False)
            self.register_buffer(f"{name}_zeros", w.zeros, persistent=False)

    def stacked(self) -> tuple["StackedW4A16", "StackedW4A16"]:
        from awqserve.kernels.moe_align import StackedW4A16

        return (StackedW4A16(self.w13_qweight, self.w13_scales, self.w13_zeros, self.group13),
                StackedW4A16(self.w2_qweight, self.w2_scales, self.w2_zeros, self.group2))

    def forward(self, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        from awqserve.kernels.triton.fused_moe import fused_moe

        w13, w2 = self.stacked()
        out: torch.Tensor = fused_moe(x.to(w13.scales.dtype), ids, weights, w13, w2)
        return out


class SparseMoE(nn.Module):
    """y = sum_{e in topk(x)} w_e * expert_e(x) (+ sigmoid(shared_gate(x)) * shared(x)).

    Routing in float32: probabilities = softmax(router logits); the top-k are renormalised to sum
    to one when `norm_topk_prob`. Input/output x [T, H] in the model dtype.
    """

    def __init__(self, cfg: MoEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.gate = Linear(cfg.hidden_size, cfg.num_experts)
        self.experts: nn.Module
        if cfg.expert_layout == FUSED:
            self.experts = FusedExperts(cfg.num_experts, cfg.hidden_size, cfg.intermediate_size)
        else:
            self.experts = nn.ModuleList(GatedMLP(cfg.hidden_size, cfg.intermediate_size)
                                         for _ in range(cfg.num_experts))
        self.shared_expert: GatedMLP | None = None
        self.shared_expert_gate: Linear | None = None
        if cfg.shared_intermediate > 0:
            self.shared_expert = GatedMLP(cfg.hidden_size, cfg.shared_intermediate)
            self.shared_expert_gate = Linear(cfg.hidden_size, 1)
        self.fused: FusedInt4Experts | None = None  # set by fuse_int4_experts (CUDA, int4 experts)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(expert ids [T, k] int64, weights [T, k] float32) for each token."""
        probs = torch.softmax(self.gate(x).float(), dim=-1)
        weights, ids = torch.topk(probs, self.cfg.top_k, dim=-1)
        if self.cfg.norm_topk_prob:
            weights = weights / weights.sum(-1, keepdim=True)
        return ids, weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, weights = self.route(x)
        out = self.experts_forward(x, ids, weights)
        if self.shared_expert is not None and self.shared_expert_gate is not None:
            shared = self.shared_expert(x).float() * torch.sigmoid(self.shared_expert_gate(x).float())
            out = out + shared
        return out.to(x.dtype)

    def experts_forward(self, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """sum_k weights[t, k] * expert_{ids[t, k]}(x[t]) as float32 [T, H], grouped by expert."""
        if self.fused is not None:
            fused: torch.Tensor = self.fused(x, ids, weights)
            return fused
        t, k = ids.shape
        flat = ids.reshape(-1)
        order = torch.argsort(flat, stable=True)
        counts = torch.bincount(flat, minlength=self.cfg.num_experts).tolist()  # one host sync per layer
        rows = order // k  # token of each sorted (token, choice) pair
        xs = x.index_select(0, rows)
        ws = weights.reshape(-1).index_select(0, order).unsqueeze(-1)
        ys = torch.empty((t * k, x.shape[1]), dtype=torch.float32, device=x.device)
        start = 0
        for e, n in enumerate(counts):
            if n:
                ys[start:start + n] = self._run_expert(e, xs[start:start + n]).float()
                start += n
        out = torch.zeros((t, x.shape[1]), dtype=torch.float32, device=x.device)
        return out.index_add_(0, rows, ys * ws)

    def _run_expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.experts, FusedExperts):
            return self.experts.run(e, x)
        out: torch.Tensor = self.experts[e](x)  # type: ignore[index]
        return out


def fuse_int4_experts(model: nn.Module) -> int:
    """Stack the experts of every SparseMoE whose expert Linears all run the Triton int4 kernel into
    `FusedInt4Experts` and drop the per-expert modules (one int4 copy remains). Returns the number of
    layers fused; a no-op on CPU models (their kernels are not Triton's)."""
    from awqserve.kernels.moe_align import StackedW4A16
    from awqserve.kernels.w4a16_kernel import TritonW4A16Kernel

    fused = 0
    for moe in [m for m in model.modules() if isinstance(m, SparseMoE)]:
        experts = moe.experts
        if not isinstance(experts, nn.ModuleList) or not len(experts):
            continue
        k13 = [cast(GatedMLP, e).gate_up_proj.kernel for e in experts]
        k2 = [cast(GatedMLP, e).down_proj.kernel for e in experts]
        triton13 = [k for k in k13 if isinstance(k, TritonW4A16Kernel)]
        triton2 = [k for k in k2 if isinstance(k, TritonW4A16Kernel)]
        if len(triton13) != len(k13) or len(triton2) != len(k2):
            continue
        w13 = StackedW4A16.stack([k.weight for k in triton13])
        w2 = StackedW4A16.stack([k.weight for k in triton2])
        moe.experts = nn.ModuleList()  # frees the per-expert copies before the next layer stacks
        moe.fused = FusedInt4Experts(w13, w2)
        fused += 1
    return fused


def detect_expert_layout(model_dir: str | Path) -> str:
    """FUSED when the checkpoint stores stacked `mlp.experts.gate_up_proj` tensors, else PER_EXPERT.

    Reads only the safetensors index or headers; a directory without weights (e.g. a config-only
    directory for `awqserve inspect`) counts as PER_EXPERT, the layout of published checkpoints.
    """
    from awqserve.loader.checkpoint import INDEX_FILE, read_header

    d = Path(model_dir)
    names: list[str] = []
    index = d / INDEX_FILE
    if index.is_file():
        names = list(json.loads(index.read_text()).get("weight_map", {}))
    else:
        for f in sorted(d.glob("*.safetensors")):
            names.extend(read_header(f))
    fused = any(n.endswith("mlp.experts.gate_up_proj") for n in names)
    return FUSED if fused else PER_EXPERT
