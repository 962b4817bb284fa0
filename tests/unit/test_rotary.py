"""RoPE tables and rotation vs transformers' reference functions (float32, exact to 1e-6)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from awqserve.config.model_config import ModelConfig
from awqserve.errors import UnsupportedError
from awqserve.layers.rotary import RopeConfig, RotaryEmbedding, compute_inv_freq, rope_config_from_model

HEAD_DIM = 32
SCALINGS = {
    "linear": {"rope_type": "linear", "factor": 4.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
    "yarn_mscale": {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 64,
                    "mscale": 1.0, "mscale_all_dim": 0.5, "beta_fast": 16, "beta_slow": 2},
}


def _hf_config(scaling: dict, **extra) -> transformers.LlamaConfig:
    return transformers.LlamaConfig(hidden_size=HEAD_DIM * 4, num_attention_heads=4, max_position_embeddings=256,
                                    rope_theta=50000.0, rope_scaling=dict(scaling), **extra)


def _ours(hf: transformers.PretrainedConfig) -> RopeConfig:
    return rope_config_from_model(ModelConfig(path=Path("."), hf=hf.to_dict()))


@pytest.mark.parametrize("name", list(SCALINGS))
def test_inv_freq_and_gain_match_transformers(name: str) -> None:
    hf = _hf_config(SCALINGS[name])
    ref_inv, ref_gain = ROPE_INIT_FUNCTIONS[SCALINGS[name]["rope_type"]](hf, "cpu")
    inv, gain = compute_inv_freq(_ours(hf))
    torch.testing.assert_close(inv, ref_inv.float(), atol=0, rtol=1e-6)
    assert gain == pytest.approx(ref_gain, rel=1e-9)


def test_legacy_rope_scaling_layout_is_read() -> None:
    """Pre-v5 config.json: top-level rope_theta, rope_scaling with the old `type` key."""
    raw = {"hidden_size": 128, "num_attention_heads": 4, "rope_theta": 1e6, "max_position_embeddings": 512,
           "rope_scaling": {"type": "linear", "factor": 2.0}, "partial_rotary_factor": 0.5}
    cfg = rope_config_from_model(ModelConfig(path=Path("."), hf=raw))
    assert (cfg.rope_type, cfg.base, cfg.rotary_dim, cfg.head_dim) == ("linear", 1e6, 16, 32)


def test_unknown_type_is_unsupported() -> None:
    with pytest.raises(UnsupportedError, match="dynamic"):
        RopeConfig(head_dim=32, rotary_dim=32, base=1e4, rope_type="dynamic")


@pytest.mark.parametrize("name", ["default", "llama3", "yarn"])
def test_rotation_matches_hf_apply(name: str) -> None:
    scaling = SCALINGS.get(name, {"rope_type": "default"})
    hf = _hf_config(scaling)
    inv, gain = ROPE_INIT_FUNCTIONS[name](hf, "cpu") if name != "default" else compute_inv_freq(_ours(hf))
    positions = torch.tensor([0, 1, 5, 63, 64, 200, 7])
    freqs = positions[:, None].float() * inv[None, :]
    emb = torch.cat([freqs, freqs], -1)
    q, k = torch.randn(7, 4, HEAD_DIM), torch.randn(7, 2, HEAD_DIM)
    # HF layout is [B, H, T, D]; cos/sin [B, T, D] get unsqueezed on dim 1.
    ref_q, ref_k = apply_rotary_pos_emb(q.transpose(0, 1)[None], k.transpose(0, 1)[None],
                                        (emb.cos() * gain)[None], (emb.sin() * gain)[None])
    got_q, got_k = RotaryEmbedding(_ours(hf))(positions, q, k, 201)
    torch.testing.assert_close(got_q, ref_q[0].transpose(0, 1), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got_k, ref_k[0].transpose(0, 1), atol=1e-6, rtol=1e-6)


def test_partial_rotary_passes_tail_through() -> None:
    cfg = RopeConfig(head_dim=32, rotary_dim=8, base=1e4)
    q, k = torch.randn(5, 2, 32), torch.randn(5, 1, 32)
    positions = torch.arange(5)
    got_q, got_k = RotaryEmbedding(cfg)(positions, q, k, 5)
    torch.testing.assert_close(got_q[..., 8:], q[..., 8:], atol=0, rtol=0)
    full_q, _ = RotaryEmbedding(RopeConfig(head_dim=8, rotary_dim=8, base=1e4))(positions, q[..., :8], k[..., :8], 5)
    torch.testing.assert_close(got_q[..., :8], full_q)
    assert not torch.equal(got_q[1:, :, :8], q[1:, :, :8])


def test_cache_grows_past_max_position() -> None:
    rope = RotaryEmbedding(RopeConfig(head_dim=8, rotary_dim=8, base=1e4, max_position=16))
    q = torch.randn(1, 1, 8)
    far, _ = rope(torch.tensor([1000]), q, q, 1001)
    assert rope._cos is not None and rope._cos.shape[0] >= 1001
    angle = 1000 * 1.0  # the first frequency is 1 rad per position
    expect = q[0, 0, 0] * torch.cos(torch.tensor(angle)) - q[0, 0, 4] * torch.sin(torch.tensor(angle))
    torch.testing.assert_close(far[0, 0, 0], expect, atol=1e-4, rtol=1e-4)


def test_presized_table_serves_positions_without_a_bound() -> None:
    """num_positions=None (compiled steps): the table sized by ensure_cache is read as it is."""
    rope = RotaryEmbedding(RopeConfig(head_dim=8, rotary_dim=8, base=1e4))
    q, k = torch.randn(3, 2, 8), torch.randn(3, 1, 8)
    positions = torch.tensor([0, 9, 30])
    want = rope(positions, q, k, 31)
    rope.ensure_cache(64, torch.device("cpu"))
    got = rope(positions, q, k, None)
    torch.testing.assert_close(got, want, atol=0, rtol=0)
