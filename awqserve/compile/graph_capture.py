"""Call compiled decode graphs directly, without dynamo's per-call frame evaluation and guards.

torch.compile re-checks its guards on every call (~1 ms per decode step for the demo model's ~340
graph inputs, measured). The decode step's inputs are fixed objects (weights, KV caches, rotary
tables) plus five per-step tensors and their sizes, and the engine itself knows which graph a batch
needs. So a compile backend records each graph inductor produces together with its example inputs;
`GraphCall` maps every input slot either to the fixed object seen at capture (identity) or to one of
the per-step tensors (or one of their sizes), and calls the compiled graph with a freshly filled list.

Invariant: a `GraphCall` is built only when every input slot is accounted for, and it is checked
against dynamo's own call on the capture batch before use; otherwise the caller keeps dynamo.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, cast

import torch
from torch._inductor.compile_fx import compile_fx

from awqserve.attention.metadata import ForwardContext

STEP_INPUTS = ("input_ids", "positions", "slot_mapping", "kv_slots", "kv_mask")


def step_tensors(input_ids: torch.Tensor, ctx: ForwardContext) -> tuple[torch.Tensor | None, ...]:
    """The per-step tensors of a decode batch, in STEP_INPUTS order."""
    dec = ctx.decode
    assert dec is not None
    return input_ids, ctx.positions, ctx.slot_mapping, dec.kv_slots, dec.kv_mask


@dataclass
class CapturedGraph:
    compiled: Callable[..., Any]
    example_inputs: list[Any]
    placeholders: list[Any]  # each placeholder's example value (FakeTensor / SymInt) from tracing


@dataclass
class CaptureBackend:
    """A torch.compile backend: inductor, plus a record of every graph it compiled."""

    graphs: list[CapturedGraph] = field(default_factory=list)

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
        # No per-call size asserts: the inputs' shapes are fixed by construction (~1 us each, ~300 per
        # step). cpp_wrapper was measured too: no gain above noise at batch 1, twice the compile time.
        with torch._inductor.config.patch({"size_asserts": False}):
            compiled = cast(Callable[..., Any], compile_fx(gm, example_inputs))
        values = [n.meta.get("example_value") for n in gm.graph.nodes if n.op == "placeholder"]
        self.graphs.append(CapturedGraph(compiled, list(example_inputs), values))
        return compiled


class GraphCall:
    """Fills a captured graph's inputs from (input_ids, ctx) and runs it. Returns the hidden states."""

    def __init__(self, graph: CapturedGraph, fixed: list[Any], step: list[tuple[int, int]],
                 sizes: list[tuple[int, int, int]]) -> None:
        self._compiled = graph.compiled
        self._fixed = fixed
        self._step = step  # (slot, index into STEP_INPUTS)
        self._sizes = sizes  # (slot, index into STEP_INPUTS, dim)

    @classmethod
    def build(cls, graph: CapturedGraph, scratch: tuple[torch.Tensor | None, ...]) -> "GraphCall | None":
        """Map the graph's inputs, given the per-step tensors used when it was captured; None when an
        input is neither a tensor seen at capture nor a size of a per-step tensor."""
        ids = {id(t): i for i, t in enumerate(scratch) if t is not None}
        step: list[tuple[int, int]] = []
        sizes: list[tuple[int, int, int]] = []
        for slot, (value, fake) in enumerate(zip(graph.example_inputs, graph.placeholders)):
            if isinstance(value, torch.Tensor):
                if id(value) in ids:
                    step.append((slot, ids[id(value)]))
            elif isinstance(value, torch.SymInt):
                where = cls._find_size(str(fake), graph, scratch, ids)
                if where is None:
                    return None
                sizes.append((slot, *where))
            else:
                return None
        return cls(graph, list(graph.example_inputs), step, sizes)

    @staticmethod
    def _find_size(symbol: str, graph: CapturedGraph, scratch: tuple[torch.Tensor | None, ...],
                   ids: dict[int, int]) -> tuple[int, int] | None:
        for value, fake in zip(graph.example_inputs, graph.placeholders):
            if isinstance(value, torch.Tensor) and id(value) in ids and isinstance(fake, torch.Tensor):
                for dim, size in enumerate(fake.shape):
                    if str(size) == symbol:
                        return ids[id(value)], dim
        return None

    def __call__(self, input_ids: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        tensors = step_tensors(input_ids, ctx)
        args = list(self._fixed)
        for slot, i in self._step:
            args[slot] = tensors[i]
        for slot, i, dim in self._sizes:
            args[slot] = tensors[i].shape[dim]  # type: ignore[union-attr]
        out = self._compiled(*args)
        hidden: torch.Tensor = out[0] if isinstance(out, (list, tuple)) else out
        return hidden
