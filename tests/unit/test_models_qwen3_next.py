"""Qwen3-Next and Qwen3-MoE in the flagship AWQ format: our loader + model vs transformers' classes.

Fixtures: tests/fixtures/build_tiny.py writes a tiny random compressed-tensors int4 checkpoint and a
float32 transformers checkpoint holding the dequantized weights (the reference).

Tolerances: all float32 with dense float32 kernels (so int4 weights are exactly the dequantized
reference weights). Our paths differ from transformers only in summation order (fused projections,
paged attention, chunked vs transformers' GDN formulation, expert grouping): logits agree to
atol 1e-4 (measured ~2e-5 on logits of std ~3). Engine-style equivalences (decode vs recompute,
chunked vs one-shot prefill, batch vs alone) compare the recurrent GDN form with the chunked one
over 150 tokens: atol/rtol 2e-4 (measured worst ~1.1e-4).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from awqserve.attention.metadata import build_context
from awqserve.layers.linear import Linear
from awqserve.loader.checkpoint import CheckpointReader
from awqserve.loader.load_model import load_model
from awqserve.models.base import CausalLM
from awqserve.quant.kernels import KernelPolicy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.build_tiny import VOCAB, TinyModel, build, load_reference  # noqa: E402

ATOL = RTOL = 1e-4
STEP_ATOL = STEP_RTOL = 2e-4
BLOCK_SIZE, NUM_BLOCKS, NUM_SLOTS = 4, 160, 6
FP32_DENSE = KernelPolicy("dense", dense_dtype=torch.float32)
ARCHS = ["qwen3_next", "qwen3_moe"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TinyModel]:
    return {arch: build(arch, tmp_path_factory.mktemp(arch), tokenizer=False) for arch in ARCHS}


@pytest.fixture(scope="module")
def models(tiny: dict[str, TinyModel]) -> dict[str, tuple[CausalLM, torch.nn.Module]]:
    return {arch: (load_model(t.awq_dir, dtype=torch.float32, weight_policy=FP32_DENSE), load_reference(t))
            for arch, t in tiny.items()}


def _prompt(length: int, seed: int = 0) -> list[int]:
    return torch.randint(0, VOCAB, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


class HybridRunner:
    """Drives a model the way the engine does: paged KV blocks per sequence, one state slot per sequence.

    Caches start filled with garbage, so a sequence that fails to ignore a recycled slot or block shows.
    """

    def __init__(self, model: CausalLM, seed: int = 0) -> None:
        self.model = model
        spec = model.cache_spec()
        gen = torch.Generator().manual_seed(seed)
        self.kv = [torch.randn(2, NUM_BLOCKS, BLOCK_SIZE, s.num_kv_heads, s.head_dim, generator=gen)
                   for s in spec.attention]
        self.conv = [torch.randn(NUM_SLOTS, *s.conv_shape, generator=gen) for s in spec.state]
        self.rec = [torch.randn(NUM_SLOTS, *s.recurrent_shape, generator=gen) for s in spec.state]
        self.free_blocks = torch.randperm(NUM_BLOCKS, generator=gen).tolist()
        self.free_slots = list(range(NUM_SLOTS))[::-1]
        self.seqs: dict[str, dict] = {}

    def add(self, name: str) -> None:
        self.seqs[name] = {"blocks": [], "slot": self.free_slots.pop(), "computed": 0}

    @torch.inference_mode()
    def step(self, chunks: dict[str, list[int]]) -> dict[str, torch.Tensor]:
        """Feed each named sequence its next tokens; returns logits [len(chunk), V] per sequence."""
        names = list(chunks)
        for n in names:
            if n not in self.seqs:
                self.add(n)
            s = self.seqs[n]
            need = math.ceil((s["computed"] + len(chunks[n])) / BLOCK_SIZE)
            while len(s["blocks"]) < need:
                s["blocks"].append(self.free_blocks.pop())
        ctx = build_context(query_lens=[len(chunks[n]) for n in names],
                            context_lens=[self.seqs[n]["computed"] for n in names],
                            block_tables=[list(self.seqs[n]["blocks"]) for n in names], block_size=BLOCK_SIZE,
                            kv_caches=self.kv, state_slots=[self.seqs[n]["slot"] for n in names],
                            conv_states=self.conv, recurrent_states=self.rec)
        ids = torch.tensor([t for n in names for t in chunks[n]], dtype=torch.int64)
        logits = self.model.compute_logits(self.model(ids, ctx))
        out, start = {}, 0
        for n in names:
            out[n] = logits[start:start + len(chunks[n])]
            start += len(chunks[n])
            self.seqs[n]["computed"] += len(chunks[n])
        return out


def _reference_logits(ref: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return ref(torch.tensor([ids])).logits[0].float()


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_match_transformers(models, arch: str) -> None:
    ours, ref = models[arch]
    ids = _prompt(150)  # > 2 GDN chunks of 64
    logits = HybridRunner(ours).step({"a": ids})["a"]
    expected = _reference_logits(ref, ids)
    torch.testing.assert_close(logits, expected, atol=ATOL, rtol=RTOL)
    assert expected.std() > 1.0 and len(set(expected.argmax(-1).tolist())) > 30  # informative logits


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_has_flagship_mix(tiny, models, arch: str) -> None:
    """Experts and attention projections are int4 in the file; shared experts, routers, GDN projections bf16."""
    with CheckpointReader(tiny[arch].awq_dir) as reader:
        info = reader.header_info()
    assert info["model.layers.0.mlp.experts.3.down_proj.weight_packed"][0] == "I32"
    assert info["model.layers.0.mlp.gate.weight"][0] == "BF16"
    assert info["lm_head.weight"][0] == "BF16"
    attn = 2 if arch == "qwen3_next" else 0
    assert f"model.layers.{attn}.self_attn.q_proj.weight_packed" in info
    if arch == "qwen3_next":
        assert info["model.layers.0.mlp.shared_expert.gate_proj.weight"][0] == "BF16"
        assert info["model.layers.0.mlp.shared_expert_gate.weight"][0] == "BF16"
        assert info["model.layers.0.linear_attn.in_proj_qkvz.weight"][0] == "BF16"
    ours, _ = models[arch]
    assert ours.quant_info.group_size == 32 and ours.quant_info.symmetric
    assert all(m.kernel is not None for m in ours.modules() if isinstance(m, Linear))


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_decode_equals_full_recompute(models, arch: str) -> None:
    """32 greedy decode steps through paged KV + state slots; every step's logits equal a full forward."""
    ours, ref = models[arch]
    runner = HybridRunner(ours, seed=1)
    runner.add("a")
    ids = _prompt(11, seed=2)
    step_logits = [runner.step({"a": ids})["a"][-1]]
    for _ in range(32):
        ids.append(int(step_logits[-1].argmax()))
        step_logits.append(runner.step({"a": ids[-1:]})["a"][0])
    expected = _reference_logits(ref, ids)[10:]
    torch.testing.assert_close(torch.stack(step_logits), expected, atol=STEP_ATOL, rtol=STEP_RTOL)
    assert len(set(ids[11:])) > 8  # the generation is not degenerate


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_chunked_prefill_equals_one_shot(models, arch: str, chunk: int) -> None:
    """Prefill split into chunks continues from stored KV, conv and recurrent state (not from zeros)."""
    ours, _ = models[arch]
    ids = _prompt(150, seed=3)
    runner = HybridRunner(ours, seed=2)
    runner.add("a")
    one_shot = runner.step({"a": ids})["a"]
    states = [t.clone() for t in runner.conv + runner.rec]
    runner = HybridRunner(ours, seed=3)
    runner.add("a")
    parts = [runner.step({"a": ids[i:i + chunk]})["a"] for i in range(0, len(ids), chunk)]
    torch.testing.assert_close(torch.cat(parts), one_shot, atol=STEP_ATOL, rtol=STEP_RTOL)
    slot = runner.seqs["a"]["slot"]
    for got, want in zip(runner.conv + runner.rec, states):
        torch.testing.assert_close(got[slot], want[slot], atol=STEP_ATOL, rtol=STEP_RTOL)


@pytest.mark.parametrize("arch", ARCHS)
def test_mixed_batch_equals_each_alone(models, arch: str) -> None:
    """Prefills, chunked prefills and decodes of different sequences share steps; each equals its solo run."""
    ours, _ = models[arch]
    prompts = {"a": _prompt(70, 4), "b": _prompt(9, 5), "c": _prompt(1, 6), "d": _prompt(33, 7)}
    # step -> tokens per sequence; every sequence's chunks concatenate to prompt + 3 decoded tokens
    schedule = [{"a": (0, 40), "b": (0, 9)}, {"a": (40, 70), "b": "dec", "c": (0, 1)},
                {"b": "dec", "c": "dec", "d": (0, 20)}, {"a": "dec", "b": "dec", "c": "dec", "d": (20, 33)},
                {"a": "dec", "c": "dec", "d": "dec"}, {"a": "dec", "d": "dec"}, {"d": "dec"}]
    batched = _run_schedule(HybridRunner(ours, seed=4), prompts, schedule)
    for name in prompts:
        alone = [{name: s[name]} for s in schedule if name in s]
        solo = _run_schedule(HybridRunner(ours, seed=5), {name: prompts[name]}, alone)
        assert batched[name][1] == solo[name][1]
        torch.testing.assert_close(batched[name][0], solo[name][0], atol=STEP_ATOL, rtol=STEP_RTOL)


def _run_schedule(runner: HybridRunner, prompts: dict[str, list[int]],
                  schedule: list[dict]) -> dict[str, tuple[torch.Tensor, list[int]]]:
    tokens = {n: list(p) for n, p in prompts.items()}
    logits: dict[str, list[torch.Tensor]] = {n: [] for n in prompts}
    for step in schedule:
        chunks = {}
        for n, what in step.items():
            if n not in runner.seqs:
                runner.add(n)
            chunks[n] = tokens[n][-1:] if what == "dec" else prompts[n][what[0]:what[1]]
        for n, lg in runner.step(chunks).items():
            logits[n].append(lg)
            done = runner.seqs[n]["computed"] >= len(prompts[n])
            if done:
                tokens[n].append(int(lg[-1].argmax()))
    return {n: (torch.cat(logits[n]), tokens[n]) for n in prompts}


def test_int4_kernels_stay_close(tiny, models) -> None:
    """The default (int4-resident) CPU kernels run bf16 activations: same argmax on most positions."""
    dense, _ = models["qwen3_next"]
    int4 = load_model(tiny["qwen3_next"].awq_dir, dtype=torch.float32, weight_policy="int4")
    ids = _prompt(40, seed=8)
    a = HybridRunner(dense).step({"a": ids})["a"]
    b = HybridRunner(int4).step({"a": ids})["a"]
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.85
    # bf16 activations, and bf16-stored float weights (shared experts, GDN projections, lm_head)
    # run natively in bf16 where the CPU supports it: ~2% of the logit spread
    assert (a - b).abs().max() < 1.0


def _assert_greedy_continuation(ref: torch.nn.Module, prompt: list[int], generated: list[int]) -> None:
    """Each generated token is the reference's argmax given everything before it. One causal forward
    over prompt + generated scores every step at once, which by induction equals step-by-step
    greedy recompute (no transformers cache involved)."""
    logits = _reference_logits(ref, prompt + generated)[len(prompt) - 1:-1]
    assert logits.argmax(-1).tolist() == generated


@pytest.mark.parametrize("arch", ARCHS)
def test_engine_greedy_matches_reference(tiny, models, arch: str) -> None:
    """The real engine (scheduler, state pool, runner) with a 16-token budget: chunked prefills of
    several requests share steps with decodes; every request's 32 greedy tokens equal transformers'."""
    from awqserve.config.engine_config import EngineConfig
    from awqserve.engine.llm_engine import LLMEngine
    from awqserve.engine.sampling_params import SamplingParams
    from awqserve.loader.tokenizer import load_tokenizer
    from fixtures.build_tiny import write_tokenizer

    ours, ref = models[arch]
    write_tokenizer(tiny[arch].awq_dir)
    config = EngineConfig(model=str(tiny[arch].awq_dir), device="cpu", dtype="float32", max_num_seqs=3,
                          max_num_batched_tokens=16, block_size=4, kv_cache_memory=8 << 20)
    engine = LLMEngine.from_config(config, model=ours, tokenizer=load_tokenizer(tiny[arch].awq_dir))
    assert engine.scheduler.block_manager.enable_prefix_caching is (arch != "qwen3_next")  # no state snapshots: off for hybrids
    prompts = {f"r{i}": _prompt(n, seed=20 + i) for i, n in enumerate([5, 23, 70, 2])}  # 4 requests, 3 slots
    params = SamplingParams(temperature=0.0, max_tokens=32, ignore_eos=True)
    for rid, p in prompts.items():
        engine.add_request(rid, p, params)
    done: dict[str, list[int]] = {}
    while engine.has_unfinished():
        for out in engine.step():
            assert out.error is None
            if out.finished:
                done[out.request_id] = out.outputs[0].token_ids
    for rid, p in prompts.items():
        assert len(done[rid]) == 32
        _assert_greedy_continuation(ref, p, done[rid])
