"""One compiled graph per decode step on CPU: the model forward through torch.compile (inductor).

Why: an eager decode step of the demo model is ~100 small torch ops per layer at 3-5 us of dispatch
each, which costs more than the matmuls themselves at batch 1. Inductor fuses the norms, RoPE,
residual adds, SiLU and the decode attention (attention/decode_op.py's traceable form: KV scatter,
gather, masked softmax) into a few C++ loops per layer; the int4 matmuls stay extern calls.

Invariants:
- Used only for decode-only steps whose every row is sampled (no prompt logprobs) and whose
  sequences have at least 2 tokens; everything else runs eager. Results equal eager up to float
  rounding (fused kernels keep intermediates in float32 and sum in a different order).
- The logits projection runs eager after the graph (one matmul, nothing to fuse; its own rows-based
  kernel switch would add graphs).
- Batch and context length are symbolic. Graphs: batch 1 (no attention mask), then one per range
  between the hybrid linear kernels' switch points (2..8 and 9..N on this CPU). `warmup` compiles
  them all before serving; afterwards each step calls its range's graph directly (graph_capture.py),
  skipping dynamo's guard evaluation (~1 ms per step, measured). Rotary tables are sized for
  `max_model_len` before warming up, so the graphs' fixed inputs never change.
- A failure while compiling disables the compiled path (logged once); serving continues eager.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Callable

import torch

from awqserve.attention.decode_op import paged_decode_traceable
from awqserve.attention.metadata import ForwardContext, build_context
from awqserve.compile.graph_capture import CaptureBackend, CapturedGraph, GraphCall, step_tensors
from awqserve.layers.rotary import RotaryEmbedding
from awqserve.models.base import CausalLM
from awqserve.quant.kernels import kernel_switch_points

TESTED_TORCH = ("2.13.",)
"""torch releases the compiled path was tested on: it relies on inductor internals
(`compile_fx`, graph example inputs), so other releases serve eager."""

log = logging.getLogger(__name__)
_SCRATCH_LEN = 37  # warm-up context length: prime, so it equals no model dimension
WarmupProgress = Callable[[float, float, str], None]  # (graphs compiled, graphs planned, "batch 2")


def torch_supported() -> bool:
    return torch.__version__.startswith(TESTED_TORCH)


def traced_view(ctx: ForwardContext) -> ForwardContext:
    """The context a captured graph sees: no host bounds (rotary tables are pre-sized) and the
    traceable decode attention."""
    assert ctx.decode is not None
    return replace(ctx, max_seq_len=None, decode=replace(ctx.decode, attend=paged_decode_traceable))


def warmup_batch_sizes(model: CausalLM, max_num_seqs: int) -> list[int]:
    """One batch size per graph the step can hit: 1, then one on each side of every kernel switch
    point inside the graph (the logits projection runs after it and does not count)."""
    head = model.logits_linear()
    skip = {id(m) for m in head.modules()} if head is not None else set()
    switches = kernel_switch_points(m for m in model.modules() if id(m) not in skip)
    sizes = [1]
    for edge in [1, *switches]:
        if edge + 1 <= max_num_seqs and edge + 1 not in sizes:
            sizes.append(edge + 1)
    return sizes


class CompiledDecode:
    """Callable `(input_ids [B], ctx) -> float32 logits [B, vocab]` for eligible decode steps."""

    def __init__(self, model: CausalLM, *, max_model_len: int, device: torch.device) -> None:
        self.model = model
        self.max_model_len = max_model_len
        self.device = device
        self.enabled = True
        self.calls = 0  # steps served by the compiled graph (tests, debugging)
        self._warm = False
        self._backend = CaptureBackend()
        self._direct: dict[int, GraphCall] = {}  # warm-up batch size -> its graph, called directly
        # dynamic=None plus explicit marks at warm-up: only batch and context-length dims become
        # symbolic (dynamic=True would also symbolise the caches' constant dims and "duck size" them
        # together with the batch).
        self._fn = torch.compile(self._forward, fullgraph=True, backend=self._backend)

    def _forward(self, input_ids: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        # Hidden states only: the logits projection runs eager after the graph. It is one matmul
        # (nothing to fuse), and its own rows-based kernel switch would otherwise add a graph.
        hidden: torch.Tensor = self.model(input_ids, ctx)
        return hidden

    @staticmethod
    def eligible(ctx: ForwardContext) -> bool:
        return ctx.decode is not None and min(ctx.seq_lens_cpu) >= 2

    def __call__(self, input_ids: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        self.calls += 1
        return self.model.compute_logits(self._hidden(input_ids, ctx))

    def _hidden(self, input_ids: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        b = input_ids.shape[0]
        key = max((s for s in self._direct if s <= b), default=None)
        if key is not None:
            return self._direct[key](input_ids, ctx)
        ctx = traced_view(ctx)
        try:
            with torch.compiler.set_stance("default", skip_guard_eval_unsafe=self._warm):
                return self._fn(input_ids, ctx)
        except RuntimeError as e:
            if "skip_guard_eval_unsafe" not in str(e):
                raise
        # A shape no warm-up covered: compile it now (once), with full guards for this call.
        log.warning("decode step: compiling an unplanned graph (batch %d)", input_ids.shape[0])
        return self._fn(input_ids, ctx)

    def _scratch_batch(self, b: int, kv_caches: list[torch.Tensor],
                       block_size: int) -> tuple[torch.Tensor, ForwardContext]:
        """A decode batch of `b` sequences over the first blocks, batch/length dims marked dynamic.

        Lengths are unequal (batched graphs take a mask) and chosen to coincide with no other size,
        so the tracer does not tie the symbols to each other or to a constant."""
        num_blocks = kv_caches[0].shape[1] if kv_caches else 1
        lens = [_SCRATCH_LEN - (i % 3) for i in range(b)]
        per_seq = -(-_SCRATCH_LEN // block_size)
        tables = [[(i * per_seq + j) % num_blocks for j in range(per_seq)] for i in range(b)]
        used = torch.tensor(sorted({x for t in tables for x in t}), device=self.device)
        for cache in kv_caches:  # CPU caches start uninitialised; the scratch reads must be finite
            cache.index_fill_(1, used, 0)
        ctx = traced_view(build_context(query_lens=[1] * b, context_lens=[n - 1 for n in lens],
                                        block_tables=tables, block_size=block_size, kv_caches=kv_caches,
                                        device=self.device))
        assert ctx.decode is not None
        ids = torch.zeros(b, dtype=torch.int64, device=self.device)
        mark = torch._dynamo.mark_dynamic
        mark(ctx.decode.kv_slots, 1)
        if b > 1:
            for t in (ids, ctx.positions, ctx.slot_mapping, ctx.decode.kv_slots):
                mark(t, 0)
            mark(ctx.decode.kv_mask, 0)
            mark(ctx.decode.kv_mask, 3)
        return ids, ctx

    @torch.inference_mode()
    def warmup(self, kv_caches: list[torch.Tensor], block_size: int, max_num_seqs: int,
               progress: WarmupProgress | None = None) -> None:
        """Compile every graph before serving. Writes scratch K/V into blocks no request owns yet.

        `progress(compiled, planned, detail)` is called before each graph and once all are done."""
        report = progress or (lambda done, total, detail: None)
        for rot in self.model.modules():
            if isinstance(rot, RotaryEmbedding):
                rot.ensure_cache(self.max_model_len, self.device)
        t0 = time.monotonic()
        sizes = warmup_batch_sizes(self.model, max_num_seqs)
        direct: dict[int, GraphCall] = {}
        try:
            for i, b in enumerate(sizes):
                hi = sizes[i + 1] - 1 if i + 1 < len(sizes) else max_num_seqs  # this graph serves b..hi
                report(i, len(sizes), f"batch {b}" if hi == b else f"batch {b}-{hi}")
                ids, ctx = self._scratch_batch(b, kv_caches, block_size)
                seen = len(self._backend.graphs)
                want = self._fn(ids, ctx)
                call = self._direct_call(self._backend.graphs[seen:], ids, ctx, want)
                if call is not None:
                    direct[b] = call
        except Exception:  # noqa: BLE001 - any compiler failure must leave a working (eager) server
            log.exception("compiling the decode step failed; serving eager (slower)")
            self.enabled = False
            return
        report(len(sizes), len(sizes), "")
        self._warm = True
        # Direct calls only if every graph has one: the batch-size ranges must all dispatch alike.
        self._direct = direct if len(direct) == len(sizes) else {}
        log.info("decode step compiled for batch sizes %s in %.1fs (%s calls)", sizes, time.monotonic() - t0,
                 "direct" if self._direct else "guarded")

    @staticmethod
    def _direct_call(new: list[CapturedGraph], ids: torch.Tensor, ctx: ForwardContext,
                     want: torch.Tensor) -> GraphCall | None:
        """The direct call for the one graph a warm-up batch compiled, if it reproduces dynamo's output."""
        if len(new) != 1:
            return None
        call = GraphCall.build(new[0], step_tensors(ids, ctx))
        if call is None or not torch.equal(call(ids, ctx), want):  # same K/V rewritten: idempotent
            return None
        return call
