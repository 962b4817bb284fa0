"""Per-step batch metadata handed to the model: the contract between ModelRunner and the model.

A step's batch is B sequences whose *new* tokens are laid out flat, sequence after sequence,
T = sum(query_lens) tokens in all. Sequence b contributes tokens
`query_start_loc[b] : query_start_loc[b+1]`, at positions `context_lens[b] .. seq_lens[b]-1`.
Decode is simply query_len == 1; chunked prefill is query_len > 1 with context_lens > 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from awqserve.attention.decode_op import DecodeMeta, build_decode_meta


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
    # Host-side copies, so backends can loop or branch without device syncs. A compiled step reads none
    # of them (each new value would be a new graph).
    query_lens_cpu: list[int] = field(default_factory=list)
    seq_lens_cpu: list[int] = field(default_factory=list)
    context_lens_cpu: list[int] = field(default_factory=list)
    # A host bound on positions (> every position), so RoPE sizes its table without a device sync;
    # None inside compiled steps, whose rotary tables were sized before capture.
    max_seq_len: int | None = None
    # Decode-only steps: the gather plan shared by every attention layer (a backend that sees it skips
    # its own planning, and a compiled step reads only its tensors).
    decode: DecodeMeta | None = None


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
    """The ForwardContext of a batch given per-sequence host lists (vectorised: a few host ops per
    sequence). Decode-only batches (one new token per sequence) also get their `DecodeMeta`."""
    b, bs, dev = len(query_lens), block_size, torch.device(device)
    width = max((len(t) for t in block_tables), default=1) or 1
    tables = torch.tensor([t + [0] * (width - len(t)) for t in block_tables], dtype=torch.int64).reshape(b, width)
    q_t = torch.tensor(query_lens, dtype=torch.int64)
    c_t = torch.tensor(context_lens, dtype=torch.int64)
    starts = torch.zeros(b + 1, dtype=torch.int64)
    torch.cumsum(q_t, 0, out=starts[1:])
    total = sum(query_lens)
    if total == b:  # decode-only: one token per sequence
        seq_idx, positions = torch.arange(b), c_t
    else:
        seq_idx = torch.repeat_interleave(torch.arange(b), q_t)
        positions = torch.arange(total) - starts[seq_idx] + c_t[seq_idx]
    slots = tables[seq_idx, positions // bs] * bs + positions % bs
    tables = tables.to(dev)
    seq_lens = [c + q for c, q in zip(context_lens, query_lens)]
    return ForwardContext(
        positions=positions.to(dev), query_start_loc=starts.to(dev), seq_lens=(c_t + q_t).to(dev),
        context_lens=c_t.to(dev), slot_mapping=slots.to(dev), block_tables=tables, block_size=bs,
        kv_caches=kv_caches or [], state_slots=(torch.tensor(state_slots, dtype=torch.int64, device=dev)
                                                  if state_slots is not None else None),
        conv_states=conv_states or [], recurrent_states=recurrent_states or [],
        query_lens_cpu=list(query_lens), seq_lens_cpu=seq_lens, context_lens_cpu=list(context_lens),
        max_seq_len=max(seq_lens, default=1),
        decode=build_decode_meta(tables, seq_lens, bs) if b and total == b else None)
