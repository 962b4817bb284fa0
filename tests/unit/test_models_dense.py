"""Dense models (Llama, Qwen2, Qwen3) loaded by awqserve vs transformers on tiny random checkpoints.

Tolerance: everything runs in float32; our kernels differ from transformers only in summation
order (fused projections, paged SDPA), so logits agree to atol 1e-4.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import transformers

from awqserve.attention.metadata import build_context
from awqserve.loader.load_model import load_model
from awqserve.models.base import CausalLM

ATOL, RTOL = 1e-4, 1e-4
BLOCK_SIZE, NUM_BLOCKS = 4, 96
VOCAB = 256

_COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
               rms_norm_eps=1e-6, tie_word_embeddings=False)
CASES: dict[str, tuple[str, dict]] = {
    "llama": ("LlamaConfig", dict(_COMMON, num_hidden_layers=3)),
    "llama_tied": ("LlamaConfig", dict(_COMMON, tie_word_embeddings=True)),
    "llama3_rope": ("LlamaConfig", dict(_COMMON, rope_theta=500000.0, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16})),
    "llama_bias": ("LlamaConfig", dict(_COMMON, attention_bias=True, mlp_bias=True)),
    "qwen2": ("Qwen2Config", dict(_COMMON, rope_theta=1000000.0)),
    "qwen3": ("Qwen3Config", dict(_COMMON, head_dim=32, rope_theta=1000000.0)),
}
_MODEL_CLASSES = {"LlamaConfig": "LlamaForCausalLM", "Qwen2Config": "Qwen2ForCausalLM",
                  "Qwen3Config": "Qwen3ForCausalLM"}


def make_hf_model(case: str, seed: int = 0) -> transformers.PreTrainedModel:
    """A tiny transformers model with weights large enough that mistakes show in the logits."""
    config_cls, kwargs = CASES[case]
    config = getattr(transformers, config_cls)(**kwargs)
    torch.manual_seed(seed)
    model = getattr(transformers, _MODEL_CLASSES[config_cls])(config).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.15)
    return model


def save(model: transformers.PreTrainedModel, path: Path) -> Path:
    model.save_pretrained(path, safe_serialization=True)
    return path


def alloc_caches(model: CausalLM) -> list[torch.Tensor]:
    return [torch.zeros(2, NUM_BLOCKS, BLOCK_SIZE, s.num_kv_heads, s.head_dim) for s in model.cache_spec().attention]


class PagedRunner:
    """Drives our model step by step like the engine would: per-sequence block tables, growing context."""

    def __init__(self, model: CausalLM, num_seqs: int, seed: int = 0) -> None:
        self.model = model
        self.caches = alloc_caches(model)
        free = torch.randperm(NUM_BLOCKS, generator=torch.Generator().manual_seed(seed)).tolist()
        per_seq = NUM_BLOCKS // num_seqs
        self.tables = [free[i * per_seq:(i + 1) * per_seq] for i in range(num_seqs)]
        self.computed = [0] * num_seqs

    @torch.inference_mode()
    def step(self, chunks: list[list[int]]) -> list[torch.Tensor]:
        """Feed `chunks[b]` as sequence b's next tokens; returns logits [len(chunk), V] per sequence."""
        q_lens = [len(c) for c in chunks]
        tables = [t[:math.ceil((c + q) / BLOCK_SIZE)] for t, c, q in zip(self.tables, self.computed, q_lens)]
        ctx = build_context(query_lens=q_lens, context_lens=list(self.computed), block_tables=tables,
                            block_size=BLOCK_SIZE, kv_caches=self.caches)
        ids = torch.tensor([t for c in chunks for t in c], dtype=torch.int64)
        logits = self.model.compute_logits(self.model(ids, ctx))
        self.computed = [c + q for c, q in zip(self.computed, q_lens)]
        return list(logits.split(q_lens))


def hf_logits(model: transformers.PreTrainedModel, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def prompts(lengths: list[int], seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in lengths]


@pytest.fixture(scope="module", params=list(CASES))
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    hf = make_hf_model(request.param)
    ours = load_model(save(hf, tmp_path_factory.mktemp(request.param)))
    return hf, ours


def test_single_sequence_matches_transformers(pair) -> None:
    hf, ours = pair
    (ids,) = prompts([21])
    (got,) = PagedRunner(ours, 1).step([ids])
    assert got.dtype == torch.float32 and got.shape == (21, VOCAB)
    torch.testing.assert_close(got, hf_logits(hf, ids), atol=ATOL, rtol=RTOL)


def test_batch_of_ragged_sequences_matches_transformers(pair) -> None:
    hf, ours = pair
    seqs = prompts([5, 17, 11], seed=2)
    for ids, got in zip(seqs, PagedRunner(ours, 3).step(seqs)):
        torch.testing.assert_close(got, hf_logits(hf, ids), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_chunked_prefill_equals_one_shot(pair, chunk: int) -> None:
    _, ours = pair
    (ids,) = prompts([23], seed=3)
    (one_shot,) = PagedRunner(ours, 1).step([ids])
    runner = PagedRunner(ours, 1, seed=5)
    for i in range(0, len(ids), chunk):
        (last,) = runner.step([ids[i:i + chunk]])
    torch.testing.assert_close(last[-1], one_shot[-1], atol=ATOL, rtol=RTOL)


def test_mixed_decode_and_prefill_steps_match_transformers(pair) -> None:
    """Three sequences: one decoding, one mid-way through a chunked prefill, one just arriving."""
    hf, ours = pair
    a, b, c = prompts([9, 14, 6], seed=4)
    runner = PagedRunner(ours, 3)
    runner.step([a, b[:5], [c[0]]])
    out = runner.step([[7], b[5:], c[1:]])  # a decodes token 7, b finishes, c prefills the rest
    torch.testing.assert_close(out[0][-1], hf_logits(hf, a + [7])[-1], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(out[1], hf_logits(hf, b)[5:], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(out[2], hf_logits(hf, c)[1:], atol=ATOL, rtol=RTOL)


def test_loaded_model_reports_float_quant_info_and_no_meta(pair) -> None:
    _, ours = pair
    assert ours.quant_info.method == "none"
    assert not any(t.is_meta for t in [*ours.parameters(), *ours.buffers()])


def test_tied_lm_head_shares_embedding_storage(tmp_path: Path) -> None:
    hf = make_hf_model("llama_tied")
    ours = load_model(save(hf, tmp_path))
    embed = ours.model.embed_tokens.weight
    assert ours.lm_head.kernel.weight.data_ptr() == embed.data_ptr()


# -- AWQ (compressed-tensors pack-quantized) variants ------------------------------------------------
GROUP = 32


def _ct_quant_config(symmetric: bool) -> dict:
    return {"quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
                "num_bits": 4, "type": "int", "symmetric": symmetric, "strategy": "group", "group_size": GROUP}}},
            "ignore": ["lm_head"]}


def save_pack_quantized(hf: transformers.PreTrainedModel, path: Path, symmetric: bool) -> Path:
    """Quantize every decoder Linear with RTN, write a pack-quantized checkpoint, and put the
    dequantized weights back into `hf` so it is the float reference of exactly that checkpoint."""
    packing = pytest.importorskip("awqserve.quant.packing")
    from safetensors.torch import save_file

    hf.config.quantization_config = _ct_quant_config(symmetric)
    hf.save_pretrained(path, safe_serialization=True)  # config.json and tokenizer-free layout
    for f in path.glob("*.safetensors*"):
        f.unlink()
    tensors: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, p in hf.state_dict().items():
            prefix = name.removesuffix(".weight")
            if not (name.endswith("_proj.weight") and prefix.startswith("model.layers.")):
                tensors[name] = p.contiguous()
                continue
            qt = packing.quantize_rtn(p, GROUP, symmetric)
            tensors[f"{prefix}.weight_packed"] = packing.pack_ct_weight(qt.qweight)
            tensors[f"{prefix}.weight_scale"] = qt.scales.to(torch.float16)
            tensors[f"{prefix}.weight_shape"] = torch.tensor(list(p.shape), dtype=torch.int64)
            if qt.zeros is not None:
                tensors[f"{prefix}.weight_zero_point"] = packing.pack_ct_zeros(qt.zeros)
            qt.scales = qt.scales.to(torch.float16).float()  # the reference sees the stored scales
            p.copy_(qt.dequantize())
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    return path


@pytest.mark.parametrize("case,symmetric", [("llama", True), ("qwen3", False), ("qwen2", True)])
def test_pack_quantized_matches_transformers_on_dequantized_weights(case: str, symmetric: bool, tmp_path: Path) -> None:
    kernels = pytest.importorskip("awqserve.quant.kernels")
    hf = make_hf_model(case)
    path = save_pack_quantized(hf, tmp_path, symmetric)
    seqs = prompts([13, 4], seed=6)
    # Exact path: dequantize to float32 at load -> fp32 tolerance.
    ours = load_model(path, weight_policy=kernels.KernelPolicy(mode="dense", dense_dtype=torch.float32))
    assert ours.quant_info.method == "awq" and ours.quant_info.symmetric is symmetric
    for ids, got in zip(seqs, PagedRunner(ours, 2).step(seqs)):
        torch.testing.assert_close(got, hf_logits(hf, ids), atol=ATOL, rtol=RTOL)
    # Default CPU policy: int4 kernels with bf16 activations -> bf16-level tolerance on logits of size ~5.
    fast = load_model(path)
    for ids, got in zip(seqs, PagedRunner(fast, 2).step(seqs)):
        torch.testing.assert_close(got, hf_logits(hf, ids), atol=0.15, rtol=0.05)
