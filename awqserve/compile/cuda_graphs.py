"""CUDA graphs for decode steps at bucketed batch sizes (captured at start; `--enforce-eager` skips).

A decode step of B sequences replays the graph of the smallest bucket >= B. Graphs read fixed
("static") buffers, so a step copies its inputs into them first:

- rows 0..B-1 are the step's sequences; padding rows B..bucket-1 duplicate row 0 exactly (token,
  position, KV slot, block table, state slot). Every write a padding row makes (its K/V into the
  cache, its GDN state) repeats row 0's write with the same value, so no scratch block or slot is
  needed and no other sequence's cache is touched; only the first B logits rows are returned.
- block tables are copied into a [max_bucket, max_blocks] buffer; columns past a sequence's length
  keep stale ids, which the kernels never read (they stop at seq_lens).
- the context the graph was captured with says "every sequence continues" (context >= 1), so steps
  holding a fresh sequence are not eligible (they run eagerly, as on CPU).
- capture runs the model on placeholder rows (block 0, state slot 0): it must happen before any
  request, while the caches hold nothing live (a sequence writes its KV before reading it, and a fresh
  sequence's GDN state starts from zero whatever its slot holds).

The sampler stays outside the graph (logits are returned; sampling runs eagerly). All graphs share
one memory pool. The capture mechanism is injectable (`GraphCapture`) so the padding and buffer logic
is unit-tested on the CPU with an eager stand-in.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from awqserve.attention.metadata import ForwardContext
from awqserve.models.base import CausalLM

log = logging.getLogger(__name__)


def decode_buckets(max_num_seqs: int) -> list[int]:
    """Batch sizes to capture: 1, 2, 4, 8, then every multiple of 8 up to `max_num_seqs` (which is
    always included), as vLLM does; ascending."""
    sizes = {b for b in (1, 2, 4) if b <= max_num_seqs} | set(range(8, max_num_seqs + 1, 8)) | {max_num_seqs}
    return sorted(s for s in sizes if s >= 1)


def bucket_for(batch: int, buckets: list[int]) -> int | None:
    """The smallest captured bucket holding `batch` rows, or None when the batch is larger than all."""
    return next((b for b in buckets if b >= batch), None)


def padded_rows(batch: int, bucket: int) -> list[int]:
    """Source row of each graph row: the step's rows in order, then row 0 repeated (see module doc)."""
    if not 1 <= batch <= bucket:
        raise ValueError(f"batch {batch} does not fit bucket {bucket}")
    return list(range(batch)) + [0] * (bucket - batch)


class GraphCapture(Protocol):
    def capture(self, fn: Callable[[], torch.Tensor]) -> tuple[Callable[[], None], torch.Tensor]:
        """Record `fn` (reading only static buffers); returns (replay, the static output it fills)."""


class CudaGraphCapture:
    """torch.cuda graphs sharing one memory pool; `fn` runs twice eagerly first (Triton compiles,
    allocator warms) on a side stream, as torch recommends."""

    def __init__(self) -> None:
        self.pool = torch.cuda.graph_pool_handle()

    def capture(self, fn: Callable[[], torch.Tensor]) -> tuple[Callable[[], None], torch.Tensor]:
        stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = fn()
        return graph.replay, out


class EagerCapture:
    """Stand-in for tests and devices without graphs: replay re-runs `fn` into the same output."""

    def capture(self, fn: Callable[[], torch.Tensor]) -> tuple[Callable[[], None], torch.Tensor]:
        out = fn()

        def replay() -> None:
            out.copy_(fn())

        return replay, out


@dataclass
class _Static:
    input_ids: torch.Tensor
    positions: torch.Tensor
    slot_mapping: torch.Tensor
    seq_lens: torch.Tensor
    context_lens: torch.Tensor
    block_tables: torch.Tensor
    state_slots: torch.Tensor
    query_start_loc: torch.Tensor
    graphs: dict[int, tuple[Callable[[], None], torch.Tensor]] = field(default_factory=dict)


class CudaGraphDecode:
    """Drop-in for the runner's compiled-decode hook: `eligible(ctx)` and `__call__(ids, ctx) -> logits`."""

    def __init__(self, model: CausalLM, *, kv_caches: list[torch.Tensor], conv_states: list[torch.Tensor],
                 recurrent_states: list[torch.Tensor], block_size: int, max_num_seqs: int, max_model_len: int,
                 device: torch.device, capture: GraphCapture | None = None, buckets: list[int] | None = None) -> None:
        self.model, self.block_size, self.max_model_len = model, block_size, max_model_len
        self.caches = (kv_caches, conv_states, recurrent_states)
        self.buckets = sorted(buckets) if buckets else decode_buckets(max_num_seqs)  # explicit: benchmarks
        self.capturer = capture if capture is not None else CudaGraphCapture()
        n, width = self.buckets[-1], -(-max_model_len // block_size)

        def buf(fill: int, *shape: int) -> torch.Tensor:
            return torch.full(shape, fill, dtype=torch.int64, device=device)

        self.static = _Static(buf(0, n), buf(1, n), buf(0, n), buf(2, n), buf(1, n), buf(0, n, width), buf(0, n),
                              torch.arange(n + 1, dtype=torch.int64, device=device))
        self.calls = 0

    @property
    def enabled(self) -> bool:
        return bool(self.static.graphs)

    def capture_all(self) -> None:
        """Capture every bucket, largest first (its memory is reused by the smaller ones). Raises
        RuntimeError when an attention layer's backend plans from host lists (the torch backend):
        a replayed graph would keep the capture's plan."""
        from awqserve.attention.triton_backend import TritonPagedAttention
        from awqserve.layers.attention import Attention

        if any(not isinstance(m.backend, TritonPagedAttention) for m in self.model.modules() if isinstance(m, Attention)):
            raise RuntimeError("CUDA graphs need the Triton attention backend (kernels.cuda_paths)")
        with torch.inference_mode():
            for b in reversed(self.buckets):
                self.static.graphs[b] = self.capturer.capture(lambda b=b: self._run(b))  # type: ignore[misc]

    def _context(self, b: int) -> ForwardContext:
        s = self.static
        kv, conv, rec = self.caches
        return ForwardContext(positions=s.positions[:b], query_start_loc=s.query_start_loc[:b + 1],
                              seq_lens=s.seq_lens[:b], context_lens=s.context_lens[:b],
                              slot_mapping=s.slot_mapping[:b], block_tables=s.block_tables[:b],
                              block_size=self.block_size, kv_caches=kv,
                              state_slots=s.state_slots[:b] if conv or rec else None, conv_states=conv,
                              recurrent_states=rec, query_lens_cpu=[1] * b, seq_lens_cpu=[2] * b,
                              context_lens_cpu=[1] * b, max_seq_len=self.max_model_len)

    def _run(self, b: int) -> torch.Tensor:
        return self.model.compute_logits(self.model(self.static.input_ids[:b], self._context(b)))

    def eligible(self, ctx: ForwardContext) -> bool:
        b = len(ctx.query_lens_cpu)
        return (self.enabled and ctx.decode is not None and bucket_for(b, self.buckets) is not None
                and min(ctx.context_lens_cpu, default=0) >= 1)

    def __call__(self, input_ids: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        b = input_ids.shape[0]
        bucket = bucket_for(b, self.buckets)
        assert bucket is not None and bucket in self.static.graphs, "call eligible() first"
        self._fill(input_ids, ctx, bucket)
        replay, out = self.static.graphs[bucket]
        replay()
        self.calls += 1
        return out[:b]

    def _fill(self, input_ids: torch.Tensor, ctx: ForwardContext, bucket: int) -> None:
        s, b = self.static, input_ids.shape[0]
        rows = torch.tensor(padded_rows(b, bucket), dtype=torch.int64).to(input_ids.device, non_blocking=True)
        for dst, src in ((s.input_ids, input_ids), (s.positions, ctx.positions), (s.slot_mapping, ctx.slot_mapping),
                         (s.seq_lens, ctx.seq_lens), (s.context_lens, ctx.context_lens)):
            dst[:bucket].copy_(src.index_select(0, rows))
        if ctx.state_slots is not None:
            s.state_slots[:bucket].copy_(ctx.state_slots.index_select(0, rows))
        width = ctx.block_tables.shape[1]
        s.block_tables[:bucket, :width].copy_(ctx.block_tables.index_select(0, rows))
