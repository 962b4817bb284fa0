"""The compiled decode step (compile/compiled_decode.py) against the eager path.

The traceable attention is compared with the eager op directly (no compiler, fp32, 1e-5); the whole
compiled step is compared through the engine on a tiny float32 Llama: greedy tokens must be identical
to eager ones, with the compiled graph actually taking the decode steps.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from awqserve.attention.decode_op import build_decode_meta, paged_decode_eager, paged_decode_traceable
from awqserve.config.engine_config import EngineConfig
from awqserve.compile.compiled_decode import CompiledDecode, warmup_batch_sizes
from awqserve.engine.llm_engine import LLMEngine
from awqserve.engine.sampling_params import SamplingParams
from awqserve.loader.load_model import load_model
from _engine_fakes import ByteTokenizer, FakeModel
from awqserve.layers.linear import Linear
from awqserve.quant.kernels import HybridKernel
from test_models_dense import make_hf_model, save


@pytest.mark.parametrize("lens", [[13], [5, 17, 9]])
def test_traceable_decode_equals_eager(lens: list[int]) -> None:
    torch.manual_seed(0)
    b, hq, hkv, d, bs = len(lens), 4, 2, 8, 4
    blocks = torch.randperm(32)[: b * 5].view(b, 5)
    cache_a = torch.randn(2, 32, bs, hkv, d)
    cache_b = cache_a.clone()
    q, k, v = torch.randn(b, hq, d), torch.randn(b, hkv, d), torch.randn(b, hkv, d)
    pos = torch.tensor(lens) - 1
    slots = blocks[torch.arange(b), pos // bs] * bs + pos % bs
    meta = build_decode_meta(blocks, lens, bs)
    assert (meta.kv_mask is None) == (b == 1)
    want = paged_decode_eager(q, k, v, cache_a, slots, meta.kv_slots, meta.kv_mask, 0.3)
    got = paged_decode_traceable(q, k, v, cache_b, slots, meta.kv_slots, meta.kv_mask, 0.3)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert torch.equal(cache_a, cache_b)  # the new K/V landed in the same slots


class _SwitchModel(FakeModel):
    """A model whose decoder holds kernels switching at `switches` rows, and whose lm_head switches at 4
    (the head runs after the graph, so its switch must not add graphs)."""

    def __init__(self, switches: list[int]) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(HybridKernel(torch.nn.Identity(), torch.nn.Identity(), m)  # type: ignore[arg-type]
                                          for m in switches)
        self.lm_head = Linear(4, 4)
        self.lm_head.kernel = HybridKernel(torch.nn.Identity(), torch.nn.Identity(), 4)  # type: ignore[arg-type]


def test_warmup_covers_each_side_of_every_kernel_switch() -> None:
    assert warmup_batch_sizes(_SwitchModel([8]), 64) == [1, 2, 9]
    assert warmup_batch_sizes(_SwitchModel([8]), 8) == [1, 2]
    assert warmup_batch_sizes(_SwitchModel([8, 16]), 64) == [1, 2, 9, 17]
    assert warmup_batch_sizes(_SwitchModel([]), 1) == [1]


def _engine(model_dir: Path, eager: bool) -> LLMEngine:
    config = EngineConfig(device="cpu", block_size=4, max_model_len=128, max_num_seqs=4,
                          max_num_batched_tokens=64, kv_cache_memory=1 << 20, enforce_eager=eager)
    return LLMEngine.from_config(config, model=load_model(model_dir), tokenizer=ByteTokenizer())


def _greedy(engine: LLMEngine, prompts: list[list[int]]) -> list[list[int]]:
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    for i, p in enumerate(prompts):
        engine.add_request(f"r{i}", p, params)
    done: dict[str, list[int]] = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                done[out.request_id] = list(out.outputs[0].token_ids)
    return [done[f"r{i}"] for i in range(len(prompts))]


def test_compiled_engine_equals_eager(tmp_path: Path) -> None:
    model_dir = save(make_hf_model("llama"), tmp_path / "llama")
    eager, compiled = _engine(model_dir, eager=True), _engine(model_dir, eager=False)
    assert eager.runner.compiled is None
    assert isinstance(compiled.runner.compiled, CompiledDecode)
    alone = [[3, 1, 4, 1, 5, 9, 2, 6]]
    batch = [[7] * 5, [11, 12, 13] * 4, [1, 2]]
    for prompts in (alone, batch):
        assert _greedy(compiled, prompts) == _greedy(eager, prompts)
    assert compiled.runner.compiled.calls >= 2 * 11  # the decode steps of both rounds ran compiled
