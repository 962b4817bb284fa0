"""`--load-format dummy`: models from config.json alone with random weights.

On the meta device the tiny and the real 80B Qwen3-Next configs are built at no memory cost; their
bytes must equal what `awqserve inspect` computes for the checkpoint from the same config minus the
16-byte `weight_shape` tensor each int4 module has on disk (the GPU keeps packed words and scales
only). On the CPU the tiny config runs a forward with finite logits.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from awqserve.attention.metadata import build_context
from awqserve.kernels.w4a16_kernel import TritonW4A16Kernel
from awqserve.layers.moe import FusedInt4Experts, SparseMoE
from awqserve.loader.dummy import load_dummy_model
from awqserve.tools.inspect import inspect_model

CONFIGS = Path(__file__).resolve().parents[1] / "fixtures" / "configs"
TINY, BIG = CONFIGS / "qwen3_next_tiny_awq", CONFIGS / "qwen3_next_80b_a3b_awq"
GB = 1e9


def model_bytes(model: torch.nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def int4_module_count(report) -> int:  # type: ignore[no-untyped-def]
    return sum(g.count for g in report.inv.groups.values() if g.kind == "int4")


@pytest.fixture(scope="module")
def big_meta() -> torch.nn.Module:
    return load_dummy_model(BIG, device="meta", dtype=torch.bfloat16)


@pytest.mark.parametrize("config_dir", [TINY, BIG], ids=["tiny", "80b"])
def test_meta_bytes_match_inspect(config_dir: Path, big_meta: torch.nn.Module) -> None:
    model = big_meta if config_dir == BIG else load_dummy_model(config_dir, device="meta")
    report = inspect_model(config_dir)
    assert model_bytes(model) == report.inv.weight_bytes - 16 * int4_module_count(report)


def test_80b_layout_on_meta(big_meta: torch.nn.Module) -> None:
    moes = [m for m in big_meta.modules() if isinstance(m, SparseMoE)]
    assert len(moes) == 48 and all(isinstance(m.fused, FusedInt4Experts) and not len(m.experts) for m in moes)
    w13, w2 = moes[0].fused.stacked()  # type: ignore[union-attr]
    assert w13.qweight.shape == (512, 2048 // 8, 1024) and w2.qweight.shape == (512, 512 // 8, 2048)
    assert w13.scales.shape == (512, 2048 // 32, 1024) and w13.zeros is None
    int4 = [m for m in big_meta.modules() if isinstance(m, TritonW4A16Kernel)]
    assert len(int4) == 12 * 2  # attention qkv (fused) and o_proj; experts are stacked


def test_80b_bytes_against_the_issue_arithmetic(big_meta: torch.nn.Module) -> None:
    """Weights ≈ 45 GB resident. Per decoded token (batch 1) a forward reads: every non-expert tensor
    except the embedding table (one row) plus the 10 routed experts of each layer: ≈ 4.3 GB at
    group 32 with the flagship's bf16 shared experts / GDN projections (the issue says ≈ 4.5 GB)."""
    total = model_bytes(big_meta)
    assert 47.0 * GB < total < 48.5 * GB
    experts = sum(model_bytes(m.fused) for m in big_meta.modules() if isinstance(m, SparseMoE))
    embed = big_meta.model.embed_tokens.weight  # type: ignore[union-attr]
    per_token = total - experts - embed.numel() * embed.element_size() + experts * 10 // 512
    assert 4.0 * GB < per_token < 4.6 * GB


def _forward(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    spec = model.cache_spec()
    bs = 16
    blocks = math.ceil(len(ids) / bs)
    kv = [torch.zeros(2, blocks, bs, s.num_kv_heads, s.head_dim) for s in spec.attention]
    conv = [torch.zeros(1, *s.conv_shape) for s in spec.state]
    rec = [torch.zeros(1, *s.recurrent_shape) for s in spec.state]
    ctx = build_context(query_lens=[len(ids)], context_lens=[0], block_tables=[list(range(blocks))], block_size=bs,
                        kv_caches=kv, state_slots=[0], conv_states=conv, recurrent_states=rec)
    with torch.inference_mode():
        return model.compute_logits(model(torch.tensor(ids), ctx))


def test_tiny_runs_on_cpu_with_finite_logits() -> None:
    model = load_dummy_model(TINY, device="cpu", dtype=torch.float32, seed=1)
    logits = _forward(model, list(range(20)))
    assert logits.shape == (20, 259) and bool(torch.isfinite(logits).all())
    assert 0.05 < float(logits.std()) < 100  # neither collapsed nor exploding
    again = load_dummy_model(TINY, device="cpu", dtype=torch.float32, seed=1)
    assert torch.equal(_forward(again, list(range(20))), logits)  # seeded: reproducible
