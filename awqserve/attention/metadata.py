"""Per-step batch metadata handed to the model: the contract between ModelRunner and the model.

A step's batch is B sequences whose *new* tokens are laid out flat, sequence after sequence,
T = sum(query_lens) tokens in all. Sequence b contributes tokens
`query_start_loc[b] : query_start_loc[b+1]`, at positions `context_lens[b] .. seq_lens[b]-1`.
Decode is simply query_len == 1; chunked prefill is query_len > 1 with context_lens > 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from awqserve.attention.decode_op import DecodeMeta


@dataclass
class KVCacheSpec:
    """Shape of one attention layer's paged KV cache: [2, num_blocks, block_size, num_kv_heads, head_dim]."""

    num_kv_heads: int
    head_dim: int


@dataclass
class StateSpec:
    """Shapes of one recurrent (GDN) layer's per-sequence state slot, without the slot dimension."""

    conv_shape: tuple[int, ...]
    recurrent_shape: tuple[int, ...]
    conv_dtype: torch.dtype = torch.float32
    recurrent_dtype: torch.dtype = torch.float32


@dataclass
class CacheSpec:
    """What a model needs cached per sequence, in layer order of each kind.

    `attention[i]` belongs to the i-th attention layer (the model numbers its attention layers
    0..len-1 and indexes `ForwardContext.kv_caches` with that number); likewise `state[j]`.
    """

    attention: list[KVCacheSpec] = field(default_factory=list)
    state: list[StateSpec] = field(default_factory=list)

    @property
    def is_hybrid(self) -> bool:
        return bool(self.state)


@dataclass
class ForwardContext:
    """Everything a model forward needs besides the token ids. Built fresh by the runner each step.

    Invariants: all index tensors live on the model's device; `slot_mapping[t]` is the flat KV slot
    (block_id * block_size + offset) where token t's K/V must be written; `block_tables[b]` lists
    sequence b's blocks in order (padded with 0 past its length); `state_slots[b]` is sequence b's
    row in every recurrent-state tensor (hybrid models only).
    """

    positions: torch.Tensor  # [T] int64
    query_start_loc: torch.Tensor  # [B+1] int64, cumulative query lengths
    seq_lens: torch.Tensor  # [B] int64, context + new tokens
    context_lens: torch.Tensor  # [B] int64, tokens already in the cache before this step
    slot_mapping: torch.Tensor  # [T] int64
    block_tables: torch.Tensor  # [B, max_blocks] int64
    block_size: int
    kv_caches: list[torch.Tensor] = field(default_factory=list)
    state_slots: torch.Tensor | None = None  # [B] int64
    conv_states: list[torch.Tensor] = field(default_factory=list)  # per GDN layer [slots, *conv_shape]
    recurrent_states: list[torch.Tensor] = field(default_factory=list)  # per GDN layer [slots, *rec_shape]
    # Host-side copies, so backends can loop or branch without device syncs.
    query_lens_cpu: list[int] = field(default_factory=list)
    seq_lens_cpu: list[int] = field(default_factory=list)
    context_lens_cpu: list[int] = field(default_factory=list)
    # Decode-only steps: the gather plan shared by every attention layer (set by the runner; a
    # backend that sees it may skip planning, and a compiled step reads only tensors).
    decode: DecodeMeta | None = None

    @property
    def num_seqs(self) -> int:
        return len(self.query_lens_cpu)

    @property
    def num_tokens(self) -> int:
        return int(self.positions.shape[0])

    @property
    def is_decode_only(self) -> bool:
        return all(q == 1 for q in self.query_lens_cpu)

    @property
    def max_query_len(self) -> int:
        return max(self.query_lens_cpu, default=0)


def build_context(
    *,
    query_lens: list[int],
    context_lens: list[int],
    block_tables: list[list[int]],
    block_size: int,
    kv_caches: list[torch.Tensor] | None = None,
    state_slots: list[int] | None = None,
    conv_states: list[torch.Tensor] | None = None,
    recurrent_states: list[torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
) -> ForwardContext:
    """Build a ForwardContext from per-sequence host lists (used by the runner and by tests)."""
    seq_lens = [c + q for c, q in zip(context_lens, query_lens)]
    positions: list[int] = []
    slots: list[int] = []
    for q, c, table in zip(query_lens, context_lens, block_tables):
        for pos in range(c, c + q):
            positions.append(pos)
            slots.append(table[pos // block_size] * block_size + pos % block_size)
    starts = [0]
    for q in query_lens:
        starts.append(starts[-1] + q)
    width = max((len(t) for t in block_tables), default=1) or 1
    padded = [t + [0] * (width - len(t)) for t in block_tables]
    as_t = lambda xs: torch.tensor(xs, dtype=torch.int64, device=device)  # noqa: E731
    return ForwardContext(
        positions=as_t(positions),
        query_start_loc=as_t(starts),
        seq_lens=as_t(seq_lens),
        context_lens=as_t(context_lens),
        slot_mapping=as_t(slots),
        block_tables=torch.tensor(padded, dtype=torch.int64, device=device).reshape(len(padded), width),
        block_size=block_size,
        kv_caches=kv_caches or [],
        state_slots=as_t(state_slots) if state_slots is not None else None,
        conv_states=conv_states or [],
        recurrent_states=recurrent_states or [],
        query_lens_cpu=list(query_lens),
        seq_lens_cpu=seq_lens,
        context_lens_cpu=list(context_lens),
    )
