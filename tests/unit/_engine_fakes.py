"""Weight-free stand-ins for engine tests: a model that really uses the paged KV cache, and a
byte-level tokenizer (token i < 256 is byte i; 256 is EOS, 257 a special token).

The fake model writes each token id into its K cache slot, then scores the next token from the
tokens it reads back through the block table (positions 0..p of its own sequence). Any paging,
chunking or slot-mapping mistake changes the logits, so engine tests catch them without weights.
"""
from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import torch

from awqserve.attention.metadata import CacheSpec, ForwardContext, KVCacheSpec, StateSpec
from awqserve.config.model_config import ModelConfig
from awqserve.models.base import CausalLM

EOS = 256
SPECIAL = 257
VOCAB = 260


def fake_config(vocab: int = VOCAB, max_len: int = 4096) -> ModelConfig:
    hf = {"architectures": ["FakeForCausalLM"], "vocab_size": vocab, "hidden_size": 1, "num_hidden_layers": 1,
          "num_attention_heads": 1, "max_position_embeddings": max_len, "eos_token_id": EOS}
    return ModelConfig(path=Path("."), hf=MappingProxyType(hf))


class FakeModel(CausalLM):
    """hidden(token at position p) = sum over q <= p of token[q] * (q + 1), read from the cache.

    `hybrid=True` adds one recurrent-state layer holding the running sum, so state-slot handling
    (zeroing, per-sequence rows) is exercised too; the result must equal the cache-based sum.
    """

    def __init__(self, vocab: int = VOCAB, hybrid: bool = False, fail_on_token: int | None = None) -> None:
        super().__init__(fake_config(vocab))
        self.vocab = vocab
        self.hybrid = hybrid
        self.fail_on_token = fail_on_token
        self.calls: list[ForwardContext] = []

    def cache_spec(self) -> CacheSpec:
        state = [StateSpec(conv_shape=(1,), recurrent_shape=(1,))] if self.hybrid else []
        return CacheSpec(attention=[KVCacheSpec(num_kv_heads=1, head_dim=1)], state=state)

    def forward(self, input_ids: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        if self.fail_on_token is not None and bool((input_ids == self.fail_on_token).any()):
            raise RuntimeError("injected failure")
        self.calls.append(ctx)
        flat = ctx.kv_caches[0].view(2, -1)
        flat[0].index_copy_(0, ctx.slot_mapping, input_ids.to(flat.dtype))
        out = torch.empty(input_ids.shape[0], 1)
        bs, t = ctx.block_size, 0
        for b, (q, c) in enumerate(zip(ctx.query_lens_cpu, ctx.context_lens_cpu)):
            table = ctx.block_tables[b]
            pos = torch.arange(c + q)
            vals = flat[0][table[pos // bs] * bs + pos % bs]
            sums = torch.cumsum(vals * (pos + 1), 0)
            out[t:t + q, 0] = sums[c:]
            if self.hybrid:
                rec = ctx.recurrent_states[0]
                slot = int(ctx.state_slots[b])
                # a sequence with no computed tokens starts from zero (its slot may hold a previous owner's state)
                before = float(rec[slot, 0]) if c else 0.0
                assert abs(before - (float(sums[c - 1]) if c else 0.0)) < 1e-3, "state slot mismatch"
                rec[slot, 0] = sums[-1]
            t += q
        return out

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        v = torch.arange(self.vocab, dtype=torch.float64)
        h = hidden.to(torch.float64)
        # A fixed pseudo-random function of h: different prefixes give different distributions.
        logits = 4.0 * torch.sin(h * 0.61803 + v[None, :] * 1.3 + torch.remainder(h, 7.0) * v[None, :])
        logits[:, EOS:] = -10.0  # EOS/special only when forced
        return logits.float()


class ByteTokenizer:
    """Token i < 256 is byte i; EOS and SPECIAL are special tokens."""

    eos_token_id = EOS

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int], skip_special_tokens: bool = True, **_: object) -> str:
        out, buf = [], bytearray()
        for i in ids:
            if i < 256:
                buf.append(i)
                continue
            out.append(buf.decode("utf-8", errors="replace"))
            buf = bytearray()
            if not skip_special_tokens:
                out.append("<eos>" if i == EOS else "<special>")
        out.append(buf.decode("utf-8", errors="replace"))
        return "".join(out)


def reference_greedy(prompt: list[int], steps: int, vocab: int = VOCAB) -> list[int]:
    """What FakeModel + greedy sampling must produce, computed without any cache."""
    model = FakeModel(vocab)
    toks = list(prompt)
    for _ in range(steps):
        h = sum(t * (q + 1) for q, t in enumerate(toks))
        toks.append(int(model.compute_logits(torch.tensor([[float(h)]])).argmax()))
    return toks[len(prompt):]


def make_engine(*, model: FakeModel | None = None, stats: object = None, **config: object):  # -> LLMEngine
    """An LLMEngine over FakeModel/ByteTokenizer with small, test-friendly defaults."""
    from awqserve.config.engine_config import EngineConfig
    from awqserve.engine.llm_engine import LLMEngine

    defaults: dict[str, object] = {"device": "cpu", "block_size": 4, "max_model_len": 256,
                                   "max_num_batched_tokens": 64, "max_num_seqs": 8, "kv_cache_memory": 1 << 20}
    defaults.update(config)
    config_obj = EngineConfig(**defaults)  # type: ignore[arg-type]
    fake = model or FakeModel()
    return LLMEngine.from_config(config_obj, model=fake, tokenizer=ByteTokenizer(), stats=stats)  # type: ignore[arg-type]


def run_to_completion(engine) -> dict:  # type: ignore[no-untyped-def]
    """Step until idle; return the final RequestOutput of every request by id."""
    final = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                final[out.request_id] = out
    return final
