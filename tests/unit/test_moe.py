"""Sparse MoE: routing math, dispatch that touches only routed experts, both expert layouts, int4/bf16 mixes.

Tolerances: float32 throughout. The grouped dispatch only reorders sums relative to the naive
every-expert-on-every-token computation: atol 1e-5. Whole tiny models vs transformers: 1e-4
(as in test_models_qwen3_next.py).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from awqserve.attention.metadata import build_context
from awqserve.layers.linear import DenseKernel, Linear
from awqserve.layers.moe import FUSED, PER_EXPERT, MoEConfig, SparseMoE, detect_expert_layout
from awqserve.loader.load_model import load_model
from awqserve.quant.kernels import KernelPolicy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.build_tiny import VOCAB, build, load_reference  # noqa: E402

FP32_DENSE = KernelPolicy("dense", dense_dtype=torch.float32)


def _materialize(moe: SparseMoE, seed: int = 0) -> SparseMoE:
    gen = torch.Generator().manual_seed(seed)
    for m in moe.modules():
        if isinstance(m, Linear):
            w = torch.randn(m.out_features, m.in_features, generator=gen) / m.in_features ** 0.5
            m.kernel = DenseKernel(w)
    return moe


def _naive(moe: SparseMoE, x: torch.Tensor) -> torch.Tensor:
    """Every expert on every token, weighted by the renormalised top-k mask (the definition)."""
    cfg = moe.cfg
    probs = torch.softmax(moe.gate(x).float(), -1)
    top = torch.topk(probs, cfg.top_k, -1)
    w = torch.zeros_like(probs).scatter(1, top.indices, top.values)
    if cfg.norm_topk_prob:
        w = w / w.sum(-1, keepdim=True)
    out = sum(w[:, e:e + 1] * moe.experts[e](x) for e in range(cfg.num_experts))
    if moe.shared_expert is not None:
        out = out + torch.sigmoid(moe.shared_expert_gate(x)) * moe.shared_expert(x)
    return out


@pytest.mark.parametrize("norm", [True, False])
@pytest.mark.parametrize("shared", [0, 24])
def test_dispatch_matches_definition(norm: bool, shared: int) -> None:
    cfg = MoEConfig(hidden_size=32, intermediate_size=16, num_experts=6, top_k=2, norm_topk_prob=norm,
                    shared_intermediate=shared)
    moe = _materialize(SparseMoE(cfg))
    x = torch.randn(37, 32, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(moe(x), _naive(moe, x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(moe(x[:0]), x[:0])  # an empty batch is fine


def test_only_routed_experts_run_once_each() -> None:
    cfg = MoEConfig(hidden_size=32, intermediate_size=16, num_experts=16, top_k=2, norm_topk_prob=True)
    moe = _materialize(SparseMoE(cfg), seed=2)
    calls: list[tuple[int, int]] = []
    for e, expert in enumerate(moe.experts):
        expert.register_forward_hook(lambda mod, args, out, e=e: calls.append((e, args[0].shape[0])))
    x = torch.randn(3, 32, generator=torch.Generator().manual_seed(3))
    ids, _ = moe.route(x)
    moe(x)
    routed = ids.reshape(-1).tolist()
    assert sorted(e for e, _ in calls) == sorted(set(routed))  # each routed expert once, nobody else
    assert all(n == routed.count(e) for e, n in calls)  # with all of its tokens in one batch


@pytest.fixture(scope="module")
def tiny_moe(tmp_path_factory: pytest.TempPathFactory):
    return build("qwen3_moe", tmp_path_factory.mktemp("moe"), tokenizer=False)


def _logits(model, ids: list[int]) -> torch.Tensor:
    spec = model.cache_spec()
    kv = [torch.zeros(2, 16, 16, s.num_kv_heads, s.head_dim) for s in spec.attention]
    ctx = build_context(query_lens=[len(ids)], context_lens=[0], block_tables=[[0, 1, 2, 3]], block_size=16,
                        kv_caches=kv)
    with torch.inference_mode():
        return model.compute_logits(model(torch.tensor(ids), ctx))


def _reference(ref, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return ref(torch.tensor([ids])).logits[0]


IDS = torch.randint(0, VOCAB, (30,), generator=torch.Generator().manual_seed(4)).tolist()


def test_fused_expert_layout_loads(tiny_moe, tmp_path: Path) -> None:
    """A float checkpoint with stacked `mlp.experts.gate_up_proj` / `down_proj` tensors (transformers 5)."""
    tensors = load_file(str(tiny_moe.reference_dir / "model.safetensors"))
    fused: dict[str, torch.Tensor] = {}
    layers: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
    for name, t in tensors.items():
        if ".mlp.experts." in name:
            prefix, rest = name.split(".mlp.experts.")
            e, proj = rest.split(".")[:2]
            layers.setdefault(prefix, {}).setdefault(int(e), {})[proj] = t
        else:
            fused[name] = t
    for prefix, experts in layers.items():
        order = sorted(experts)
        fused[f"{prefix}.mlp.experts.gate_up_proj"] = torch.stack(
            [torch.cat([experts[e]["gate_proj"], experts[e]["up_proj"]]) for e in order])
        fused[f"{prefix}.mlp.experts.down_proj"] = torch.stack([experts[e]["down_proj"] for e in order])
    save_file(fused, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((tiny_moe.reference_dir / "config.json").read_text())
    assert detect_expert_layout(tmp_path) == FUSED and detect_expert_layout(tiny_moe.awq_dir) == PER_EXPERT
    model = load_model(tmp_path, dtype=torch.float32, weight_policy=FP32_DENSE)
    torch.testing.assert_close(_logits(model, IDS), _reference(load_reference(tiny_moe), IDS), atol=1e-4, rtol=1e-4)


def test_mixed_int4_and_bf16_experts(tmp_path: Path) -> None:
    """The ignore list keeps some experts of a layer (and one whole projection kind) in bf16."""
    extra = ("re:.*experts\\.3\\..*", "re:.*layers\\.2\\.mlp\\.experts\\.\\d+\\.down_proj$")
    tiny = build("qwen3_moe", tmp_path, tokenizer=False, extra_ignore=extra)
    assert "model.layers.0.mlp.experts.3.gate_proj" not in tiny.quantized
    assert "model.layers.0.mlp.experts.2.gate_proj" in tiny.quantized
    assert "model.layers.2.mlp.experts.0.down_proj" not in tiny.quantized
    assert json.loads((tiny.awq_dir / "config.json").read_text())["quantization_config"]["ignore"][-2:] == list(extra)
    model = load_model(tiny.awq_dir, dtype=torch.float32, weight_policy=FP32_DENSE)
    torch.testing.assert_close(_logits(model, IDS), _reference(load_reference(tiny), IDS), atol=1e-4, rtol=1e-4)
