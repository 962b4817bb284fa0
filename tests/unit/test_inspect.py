"""`awqserve inspect`: counts and memory plan from config + headers, checked against QWEN3_NEXT.md's arithmetic.

The 80B case uses a config-only directory (shapes from the published config, no weights); the
expected figures are the ones worked out in QWEN3_NEXT.md: 79.67B parameters without MTP, 3.87B
active per token, 24 KiB of bf16 KV per token over the 12 attention layers, 72 MiB of fp32
recurrent state (+ 3.375 MiB of conv state) per sequence over the 36 GDN layers.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from awqserve.cli.main import main
from awqserve.tools.inspect import ACTIVATION_RESERVE, inspect_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.build_tiny import IGNORE, build  # noqa: E402

GiB, MiB, KiB = 1 << 30, 1 << 20, 1 << 10


def write_qwen3_next_80b_config(d: Path, group_size: int = 32) -> Path:
    """config.json of Qwen3-Next-80B-A3B-Instruct in the flagship AWQ layout (transformers 4.x field names)."""
    d.mkdir(parents=True, exist_ok=True)
    cfg = {"architectures": ["Qwen3NextForCausalLM"], "model_type": "qwen3_next", "hidden_size": 2048,
           "num_hidden_layers": 48, "num_attention_heads": 16, "num_key_value_heads": 2, "head_dim": 256,
           "partial_rotary_factor": 0.25, "rope_theta": 10000000, "full_attention_interval": 4,
           "linear_num_key_heads": 16, "linear_num_value_heads": 32, "linear_key_head_dim": 128,
           "linear_value_head_dim": 128, "linear_conv_kernel_dim": 4, "num_experts": 512, "num_experts_per_tok": 10,
           "moe_intermediate_size": 512, "shared_expert_intermediate_size": 512, "intermediate_size": 5120,
           "decoder_sparse_step": 1, "mlp_only_layers": [], "norm_topk_prob": True, "vocab_size": 151936,
           "tie_word_embeddings": False, "rms_norm_eps": 1e-6, "max_position_embeddings": 262144,
           "torch_dtype": "bfloat16", "hidden_act": "silu",
           "quantization_config": {
               "quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
               "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
                   "num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": group_size}}},
               "ignore": IGNORE["qwen3_next"]}}
    (d / "config.json").write_text(json.dumps(cfg))
    return d


@pytest.fixture(scope="module")
def report_80b(tmp_path_factory: pytest.TempPathFactory):
    d = write_qwen3_next_80b_config(tmp_path_factory.mktemp("q3n80b"))
    return inspect_model(d, budgets=[80 * GiB, 48 * GiB])


def test_80b_counts_match_the_arithmetic(report_80b) -> None:
    r = report_80b
    assert r.inv.source.startswith("config")
    assert abs(r.inv.params - 79.67e9) < 0.01e9
    assert abs(r.active_params - 3.87e9) < 0.01e9
    assert r.layer_kinds == {"linear_attention": 36, "full_attention": 12}
    assert r.inv.routed_expert_params == 48 * 512 * 3 * 512 * 2048
    # flagship mix: experts + attention projections int4, everything else float
    int4 = {g.pattern for g in r.inv.groups.values() if g.kind == "int4"}
    assert int4 == {f"model.layers.*.mlp.experts.*.{p}_proj" for p in ("gate", "up", "down")} | {
        f"model.layers.*.self_attn.{p}_proj" for p in "qkvo"}
    # int4 g32: 0.5 B/param packed + a bf16 scale per 32 weights
    assert r.inv.bytes_by_kind["int4"] == pytest.approx(r.inv.params_by_kind["int4"] * (0.5 + 2 / 32), rel=1e-4)


def test_80b_cache_and_memory_plan(report_80b) -> None:
    r = report_80b
    assert r.kv_bytes_per_token == 24 * KiB
    assert r.state_bytes_per_seq == 36 * (32 * 128 * 128 * 4 + 8192 * 3 * 4)  # 72 MiB + 3.375 MiB
    assert r.max_model_len == 262144
    at_limit = r.seq_bytes(262144)
    assert at_limit == 262144 * 24 * KiB + r.state_bytes_per_seq  # ≈ 6.07 GiB
    big, small = r.plans
    assert big.free_for_cache == 80 * GiB - r.inv.weight_bytes - ACTIVATION_RESERVE
    assert big.seqs_at_limit == big.free_for_cache // at_limit == 5
    assert big.seqs_by_context[32768] == 41
    # 48 GiB: the int4 weights (~44.5 GiB) fit, but not one full-length context; 32k contexts do
    assert 44 * GiB < r.inv.weight_bytes < 45 * GiB
    assert small.seqs_at_limit == 0 and small.seqs_by_context[32768] == 3


@pytest.mark.parametrize("arch", ["qwen3_next", "qwen3_moe"])
def test_headers_and_config_agree_without_reading_weights(tmp_path: Path, monkeypatch, arch: str) -> None:
    """The inventory from real headers equals the one the meta model predicts; no tensor data is read."""
    tiny = build(arch, tmp_path / "m", tokenizer=False)
    import safetensors

    def refuse(*a, **k):
        raise AssertionError("inspect must not read tensor data")

    monkeypatch.setattr(safetensors, "safe_open", refuse)
    monkeypatch.setattr("awqserve.loader.checkpoint.safe_open", refuse)
    from_headers = inspect_model(tiny.awq_dir)
    config_only = tmp_path / "cfg"
    config_only.mkdir()
    (config_only / "config.json").write_text((tiny.awq_dir / "config.json").read_text())
    from_config = inspect_model(config_only)
    assert from_headers.inv.source.startswith("safetensors") and from_config.inv.source.startswith("config")
    assert from_headers.inv.params == from_config.inv.params
    assert from_headers.inv.params_by_kind["int4"] == from_config.inv.params_by_kind["int4"]
    assert from_headers.inv.bytes_by_kind["int4"] == from_config.inv.bytes_by_kind["int4"]
    assert from_headers.active_params == from_config.active_params < from_headers.inv.params
    assert sum(g.count for g in from_headers.inv.groups.values() if g.kind == "int4") == len(tiny.quantized)


def test_cli_prints_the_plan(tmp_path: Path, capsys) -> None:
    d = write_qwen3_next_80b_config(tmp_path / "q3n")
    assert main(["inspect", str(d), "--memory", "80GiB", "--max-model-len", "32768"]) == 0
    out = capsys.readouterr().out
    assert "parameters: 79.67B loaded" in out and "active per token: 3.87B" in out
    assert "KV 24.00 KiB/token (bf16) + recurrent state 75.38 MiB" in out
    assert "memory 80.00 GiB" in out and "41 at 32,768 tokens" in out
    assert "int4   24576 x" in out and "model.layers.*.mlp.shared_expert.down_proj" in out
