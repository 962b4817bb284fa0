"""The dummy model (`--load-format dummy`) end to end: decode tok/s at several batch sizes (CUDA
graphs vs eager) and prefill tok/s, each against its roofline. Drives the model directly (no
scheduler, no sampler): the numbers are the model step's."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from awqserve.attention.metadata import build_context
from awqserve.compile.cuda_graphs import CudaGraphDecode, EagerCapture, GraphCapture
from awqserve.layers.linear import LinearKernel
from awqserve.layers.moe import SparseMoE
from awqserve.loader.dummy import load_dummy_model
from awqserve.models.base import CausalLM
from bench.gpu.common import ModelBytes, rel_err, time_ms

BLOCK = 16


def tensor_bytes(module: torch.nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for t in [*module.parameters(), *module.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def inventory(model: CausalLM) -> ModelBytes:
    c = model.config
    moes = [m for m in model.modules() if isinstance(m, SparseMoE)]
    experts = sum(tensor_bytes(m.fused) if m.fused is not None else tensor_bytes(m.experts) for m in moes)
    embed = model.model.embed_tokens.weight  # type: ignore[union-attr]
    total = tensor_bytes(model)
    spec = model.cache_spec()
    state = sum(math.prod(s.conv_shape) * 4 + math.prod(s.recurrent_shape) * 4 for s in spec.state)
    kv = sum(2 * s.num_kv_heads * s.head_dim * 2 for s in spec.attention)
    n_exp, top_k = int(c.get("num_experts") or 0), int(c.get("num_experts_per_tok") or 0)
    params = _params(model)
    routed = params["experts"]
    active = params["all"] - params["embed"] - routed + (routed * top_k // max(1, n_exp))
    return ModelBytes(dense=total - experts - embed.numel() * embed.element_size(), experts=experts,
                      num_experts=n_exp, top_k=top_k, embed_row=embed.shape[1] * embed.element_size(),
                      state_per_seq=state, kv_per_token=kv, active_params=active)


def _params(model: CausalLM) -> dict[str, int]:
    """Weights counted as parameters (int4 Linears by their N*K, not their packed words)."""
    counts = {"all": 0, "experts": 0, "embed": model.model.embed_tokens.weight.numel()}  # type: ignore[union-attr]
    for m in model.modules():
        if isinstance(m, LinearKernel):
            n = getattr(m, "out_features", 0) * getattr(m, "in_features", 0) or sum(p.numel() for p in m.parameters())
            counts["all"] += n
        elif isinstance(m, SparseMoE) and m.fused is not None:
            w13, w2 = m.fused.stacked()
            n = w13.num_experts * (w13.shape[0] * w13.shape[1] + w2.shape[0] * w2.shape[1])
            counts["all"] += n
            counts["experts"] += n
    counts["all"] += counts["embed"]
    return counts


@dataclass
class Harness:
    """A model with caches for `max_batch` decode sequences of `decode_tokens` tokens each, plus one
    long table of `prefill_tokens` for prefill runs (so the 8k prefill does not size every sequence)."""

    model: CausalLM
    device: torch.device
    kv: list[torch.Tensor]
    conv: list[torch.Tensor]
    rec: list[torch.Tensor]
    blocks_per_seq: int
    long_blocks: int

    @staticmethod
    def build(model: CausalLM, device: torch.device, dtype: torch.dtype, max_batch: int, decode_tokens: int,
              prefill_tokens: int = 0) -> "Harness":
        spec = model.cache_spec()
        per_seq = -(-decode_tokens // BLOCK)
        long_blocks = -(-prefill_tokens // BLOCK)
        nb = max_batch * per_seq + long_blocks
        kv = [torch.randn(2, nb, BLOCK, s.num_kv_heads, s.head_dim, device=device, dtype=dtype) for s in spec.attention]
        conv = [torch.zeros(max_batch, *s.conv_shape, device=device) for s in spec.state]
        rec = [torch.zeros(max_batch, *s.recurrent_shape, device=device) for s in spec.state]
        return Harness(model, device, kv, conv, rec, per_seq, long_blocks)

    def context(self, query_lens: list[int], context_lens: list[int], long: bool = False):  # type: ignore[no-untyped-def]
        tables = [list(range(b * self.blocks_per_seq, (b + 1) * self.blocks_per_seq)) for b in range(len(query_lens))]
        if long:  # one sequence on the long table (prefill runs)
            start = self.kv[0].shape[1] - self.long_blocks
            tables = [list(range(start, start + self.long_blocks))]
        return build_context(query_lens=query_lens, context_lens=context_lens, block_tables=tables, block_size=BLOCK,
                             kv_caches=self.kv, state_slots=list(range(len(query_lens))), conv_states=self.conv,
                             recurrent_states=self.rec, device=self.device)

    def ids(self, n: int) -> torch.Tensor:
        return torch.randint(0, self.model.config.vocab_size, (n,), device=self.device)

    @torch.inference_mode()
    def eager_logits(self, ids: torch.Tensor, ctx) -> torch.Tensor:  # type: ignore[no-untyped-def]
        return self.model.compute_logits(self.model(ids, ctx))

    @torch.inference_mode()
    def prefill_logits(self, ids: torch.Tensor, ctx) -> torch.Tensor:  # type: ignore[no-untyped-def]
        """As the engine prefills: logits of the last position only."""
        return self.model.compute_logits(self.model(ids, ctx)[-1:])

    def graphs(self, buckets: list[int], max_model_len: int, capture: GraphCapture | None) -> CudaGraphDecode:
        g = CudaGraphDecode(self.model, kv_caches=self.kv, conv_states=self.conv, recurrent_states=self.rec,
                            block_size=BLOCK, max_num_seqs=max(buckets), max_model_len=max_model_len,
                            device=self.device, capture=capture, buckets=buckets)
        g.capture_all()
        return g

    def save_states(self, batch: int) -> list[torch.Tensor]:
        return [t[:batch].clone() for t in self.conv + self.rec]

    def restore_states(self, saved: list[torch.Tensor]) -> None:
        for t, s in zip(self.conv + self.rec, saved):
            t[: s.shape[0]].copy_(s)


def load(config_dir: str, device: torch.device, dtype: torch.dtype, factory=None) -> tuple[CausalLM, float]:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    model = load_dummy_model(config_dir, device=device, dtype=dtype, kernel_factory=factory)
    if factory is not None:  # CPU smoke runs: select the CUDA paths by hand
        from awqserve.kernels.cuda_paths import prepare_for_device

        prepare_for_device(model, torch.device("cuda"))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return model, time.perf_counter() - t0


def decode_runs(h: Harness, batches: list[int], context: int, graphs: CudaGraphDecode | None,
                iters: int) -> dict[int, dict[str, float]]:
    """ms per decode step at each batch: eager and (when captured) graph replay; graph-vs-eager error."""
    out: dict[int, dict[str, float]] = {}
    for b in batches:
        ctx = h.context([1] * b, [context] * b)
        ids = h.ids(b)
        saved = h.save_states(b)
        row: dict[str, float] = {"eager_ms": time_ms(lambda: h.eager_logits(ids, ctx), warmup=2, iters=iters)}
        if graphs is not None and graphs.eligible(ctx):
            h.restore_states(saved)
            want = h.eager_logits(ids, ctx)
            h.restore_states(saved)
            with torch.inference_mode():
                got = graphs(ids, ctx).clone()
                row["graph_err"] = rel_err(got, want)
                row["graph_ms"] = time_ms(lambda: graphs(ids, ctx), warmup=2, iters=iters)
        h.restore_states(saved)
        out[b] = row
    return out


def prefill_runs(h: Harness, lengths: list[int], iters: int) -> dict[int, float]:
    """ms to prefill one sequence of each length (eager)."""
    out = {}
    for n in lengths:
        ctx = h.context([n], [0], long=True)
        ids = h.ids(n)
        out[n] = time_ms(lambda: h.prefill_logits(ids, ctx), warmup=1, iters=iters)
    return out


def idle_capture() -> GraphCapture:
    """CPU smoke runs: replay re-runs the step eagerly."""
    return EagerCapture()
