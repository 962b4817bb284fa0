"""Paged KV-cache bookkeeping: fixed-size blocks, ref counts, prefix caching. Pure Python.

A block holds `block_size` consecutive tokens of one sequence (in every attention layer). Full,
computed blocks can be registered in the prefix cache under a chained hash
`hash((parent_hash, tokens))`, so a later sequence whose leading tokens match reuses them (ref
count + 1) instead of recomputing. Blocks whose ref count drops to 0 stay cached ("evictable")
until a fresh block is needed: never-cached free blocks are handed out first, then cached ones in
least-recently-freed order.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

from awqserve.engine.request import Request

_ROOT_HASH = 0x5EED


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Allocation:
    """What `BlockManager.allocate` gave a request: its leading cached blocks (already computed, so the
    scheduler starts the request at `num_cached_tokens`) and the fresh blocks after them."""

    cached_blocks: tuple[int, ...]
    new_blocks: tuple[int, ...]
    num_cached_tokens: int


class BlockManager:
    """Owns the free list, ref counts and the prefix-cache index of `num_blocks` KV blocks, and is the
    only writer of a request's `block_ids`, `block_hashes` and `num_registered_blocks`.

    Invariants: a block is either referenced (ref > 0, in some request's `block_ids`), evictable
    (ref 0, hashed, in `_evictable`) or free (ref 0, unhashed, in `_free`); a hashed block's
    contents equal the tokens recorded for it, computed after the same prefix.
    """

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = False) -> None:
        if num_blocks < 1:
            raise ValueError("num_blocks must be >= 1")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._ref = [0] * num_blocks
        self._hash: list[int | None] = [None] * num_blocks
        self._tokens: list[tuple[int, ...] | None] = [None] * num_blocks
        self._by_hash: dict[int, int] = {}
        self._free: deque[int] = deque(range(num_blocks))
        self._evictable: OrderedDict[int, None] = OrderedDict()
        self.prefix_queries = 0  # tokens looked up in the prefix cache
        self.prefix_hits = 0  # tokens found

    # -- capacity --------------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        return len(self._free) + len(self._evictable)

    @property
    def usage(self) -> float:
        """Fraction of blocks referenced by live sequences (evictable cached blocks count as free)."""
        return 1.0 - self.num_free_blocks / self.num_blocks

    def blocks_needed(self, request: Request, num_new_tokens: int) -> int:
        """Blocks `request` must gain so that `num_computed_tokens + num_new_tokens` tokens fit."""
        return max(0, _cdiv(request.num_computed_tokens + num_new_tokens, self.block_size) - len(request.block_ids))

    # -- prefix cache lookup ---------------------------------------------------------------------
    def _block_hashes(self, request: Request, num_blocks: int) -> list[int]:
        """Chained hashes of the first `num_blocks` full blocks of the request's tokens (memoised)."""
        hashes, bs, toks = request.block_hashes, self.block_size, request.all_token_ids
        parent = hashes[-1] if hashes else _ROOT_HASH
        for i in range(len(hashes), num_blocks):
            parent = hash((parent, tuple(toks[i * bs:(i + 1) * bs])))
            hashes.append(parent)
        return hashes[:num_blocks]

    def find_cached_prefix(self, request: Request) -> list[int]:
        """Block ids of the longest cached prefix of a request that holds no blocks yet.

        Never covers the whole sequence: at least its last token is left to compute so the step
        produces logits. Empty when caching is off or prompt logprobs are requested (those need
        logits for every prompt position).
        """
        if not self.enable_prefix_caching or request.needs_prompt_logprobs or request.block_ids:
            return []
        max_blocks = (request.num_tokens - 1) // self.block_size
        bs, toks, found = self.block_size, request.all_token_ids, []
        for i, h in enumerate(self._block_hashes(request, max_blocks)):
            block = self._by_hash.get(h)
            if block is None or self._tokens[block] != tuple(toks[i * bs:(i + 1) * bs]):
                break
            found.append(block)
        return found

    # -- allocation ------------------------------------------------------------------------------
    def can_allocate(self, request: Request, num_new_tokens: int, cached: list[int] | None = None) -> bool:
        """Whether `allocate(request, num_new_tokens, cached)` would succeed."""
        cached = cached or []
        total = _cdiv(len(cached) * self.block_size + num_new_tokens, self.block_size)
        revived = sum(1 for b in cached if self._ref[b] == 0)  # cached blocks leave the free pool too
        return total - len(cached) <= self.num_free_blocks - revived

    def allocate(self, request: Request, num_new_tokens: int, cached: list[int] | None = None) -> Allocation | None:
        """Give a request without blocks the `cached` prefix blocks plus fresh ones for `num_new_tokens`
        more tokens. Returns what was allocated, or None (changing nothing) when the blocks do not fit.
        The caller (the scheduler) sets `num_computed_tokens` from `Allocation.num_cached_tokens`."""
        assert not request.block_ids, "allocate() is for requests that hold no blocks"
        cached = cached or []
        if not self.can_allocate(request, num_new_tokens, cached):
            return None
        for b in cached:
            if self._ref[b] == 0:
                del self._evictable[b]
            self._ref[b] += 1
        request.block_ids = list(cached)
        request.num_registered_blocks = len(cached)
        num_cached = len(cached) * self.block_size
        if self.enable_prefix_caching and not request.needs_prompt_logprobs:
            self.prefix_queries += request.num_tokens
            self.prefix_hits += num_cached
        fresh = self._grow(request, _cdiv(num_cached + num_new_tokens, self.block_size) - len(cached))
        return Allocation(tuple(cached), tuple(fresh), num_cached)

    def append_slots(self, request: Request, num_new_tokens: int) -> bool:
        """Make room for `num_new_tokens` more tokens of a running request; False if out of blocks."""
        needed = self.blocks_needed(request, num_new_tokens)
        if needed > self.num_free_blocks:
            return False
        self._grow(request, needed)
        return True

    def _grow(self, request: Request, count: int) -> list[int]:
        fresh = []
        for _ in range(count):
            block = self._take_free()
            self._ref[block] = 1
            fresh.append(block)
        request.block_ids.extend(fresh)
        return fresh

    def _take_free(self) -> int:
        if self._free:
            return self._free.popleft()
        block, _ = self._evictable.popitem(last=False)  # least recently freed cached block
        self._forget(block)
        return block

    def _forget(self, block: int) -> None:
        h = self._hash[block]
        if h is not None and self._by_hash.get(h) == block:
            del self._by_hash[h]
        self._hash[block] = None
        self._tokens[block] = None

    # -- after a step ----------------------------------------------------------------------------
    def cache_full_blocks(self, request: Request) -> None:
        """Register the request's newly completed full blocks in the prefix cache."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        n_full = min(request.num_computed_tokens // bs, len(request.block_ids))
        start = request.num_registered_blocks
        if n_full <= start:
            return
        hashes = self._block_hashes(request, n_full)
        toks = request.all_token_ids
        for i in range(start, n_full):
            block, h = request.block_ids[i], hashes[i]
            if h not in self._by_hash and self._hash[block] is None:
                self._by_hash[h] = block
                self._hash[block] = h
                self._tokens[block] = tuple(toks[i * bs:(i + 1) * bs])
        request.num_registered_blocks = n_full

    def free(self, request: Request) -> None:
        """Drop the request's references; cached blocks become evictable, the rest free.

        The tail is released first so that, under LRU eviction, a sequence's last blocks are
        reused before its (more shareable) leading blocks.
        """
        for block in reversed(request.block_ids):
            self._ref[block] -= 1
            if self._ref[block] == 0:
                if self._hash[block] is not None:
                    self._evictable[block] = None
                else:
                    self._free.append(block)
        request.block_ids = []
        request.num_registered_blocks = 0
