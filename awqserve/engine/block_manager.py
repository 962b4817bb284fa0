"""Paged KV-cache bookkeeping: fixed-size blocks, ref counts, prefix caching. Pure Python.

A block holds `block_size` consecutive tokens of one sequence (in every attention layer). Full,
computed blocks can be registered in the prefix cache under a chained hash
`hash((parent_hash, tokens))`, so a later sequence whose leading tokens match reuses them (ref
count + 1) instead of recomputing. Blocks whose ref count drops to 0 stay cached ("evictable")
until a fresh block is needed: never-cached free blocks are handed out first, then cached ones in
least-recently-freed order.

Reuse is token-granular (as llama.cpp's prompt cache is): when a request ends, the computed tokens
of its last, partly filled block stay cached too, indexed by their parent hash. A later sequence
that matches the full blocks before it and then some leading tokens of such a block (or of a cached
full block) gets a fresh block with those token slots copied in (`KvCopy`, done by the model runner
before the step's forward) instead of recomputing them. Shared blocks are never written in place.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

from awqserve.engine.request import Request

_ROOT_HASH = 0x5EED
MAX_CHILDREN = 64
"""Blocks indexed per parent for partial copies (newest kept): bounds the scan a prompt's lookup does
when many sequences continue one popular prefix (e.g. a shared system prompt)."""


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class KvCopy:
    """Copy the first `num_tokens` token slots of block `src` into block `dst` (every attention layer),
    before the forward of the step that scheduled it. `dst` is a fresh block of one request."""

    src: int
    dst: int
    num_tokens: int


@dataclass(frozen=True)
class PrefixHit:
    """The longest cached prefix of a request: whole shared `blocks`, then `copy_len` tokens that a
    cached block `copy_src` holds right after them (0 / None when nothing matches there)."""

    blocks: tuple[int, ...] = ()
    copy_src: int | None = None
    copy_len: int = 0

    def num_tokens(self, block_size: int) -> int:
        return len(self.blocks) * block_size + self.copy_len


_NO_HIT = PrefixHit()


@dataclass(frozen=True)
class Allocation:
    """What `BlockManager.allocate` gave a request: its leading cached blocks and the fresh blocks after
    them; `num_cached_tokens` are already computed (the scheduler starts the request there), the last
    `copy.num_tokens` of them once the runner has done `copy` (into the first fresh block)."""

    cached_blocks: tuple[int, ...]
    new_blocks: tuple[int, ...]
    num_cached_tokens: int
    copy: KvCopy | None = None


class BlockManager:
    """Owns the free list, ref counts and the prefix-cache index of `num_blocks` KV blocks, and is the
    only writer of a request's `block_ids`, `block_hashes` and `num_registered_blocks`.

    Invariants: a block is either referenced (ref > 0, in some request's `block_ids`), evictable
    (ref 0, with recorded tokens, in `_evictable`) or free (ref 0, nothing recorded, in `_free`); a
    block with recorded tokens (`_tokens`) holds their KV, computed after the prefix whose chained
    hash is its `_parent`; it is full and findable by `_hash` unless it is a partial tail kept at
    free time (never referenced again, only copied from).
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
        self._parent: list[int | None] = [None] * num_blocks
        self._children: dict[int, dict[int, None]] = {}  # parent hash -> blocks with recorded tokens
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

    def find_cached_prefix(self, request: Request) -> PrefixHit:
        """The longest cached prefix of a request that holds no blocks yet: whole blocks, then a partial
        copy from a cached block that continues them.

        Never covers the whole sequence: at least its last token is left to compute so the step
        produces logits. Empty when caching is off or prompt logprobs are requested (those need
        logits for every prompt position).
        """
        if not self.enable_prefix_caching or request.needs_prompt_logprobs or request.block_ids:
            return _NO_HIT
        max_blocks = (request.num_tokens - 1) // self.block_size
        bs, toks, found = self.block_size, request.all_token_ids, []
        hashes = self._block_hashes(request, max_blocks)
        for i, h in enumerate(hashes):
            block = self._by_hash.get(h)
            if block is None or self._tokens[block] != tuple(toks[i * bs:(i + 1) * bs]):
                break
            found.append(block)
        parent = hashes[len(found) - 1] if found else _ROOT_HASH
        start = len(found) * bs
        src, n = self._best_child(parent, toks[start:min(start + bs, request.num_tokens - 1)])
        return PrefixHit(tuple(found), src, n)

    def _best_child(self, parent: int, want: list[int]) -> tuple[int | None, int]:
        """The cached block after prefix `parent` sharing the most leading tokens with `want`."""
        best, best_n = None, 0
        for block in self._children.get(parent, ()):
            have = self._tokens[block]
            assert have is not None
            n = 0
            for a, b in zip(have, want):
                if a != b:
                    break
                n += 1
            if n > best_n:
                best, best_n = block, n
        return best, best_n

    # -- allocation ------------------------------------------------------------------------------
    def can_allocate(self, request: Request, num_new_tokens: int, hit: PrefixHit | None = None) -> bool:
        """Whether `allocate(request, num_new_tokens, hit)` would succeed."""
        hit = hit or _NO_HIT
        cached = hit.blocks
        total = _cdiv(hit.num_tokens(self.block_size) + num_new_tokens, self.block_size)
        revived = sum(1 for b in cached if self._ref[b] == 0)  # cached blocks leave the free pool too
        return total - len(cached) <= self.num_free_blocks - revived

    def allocate(self, request: Request, num_new_tokens: int, hit: PrefixHit | None = None) -> Allocation | None:
        """Give a request without blocks the prefix `hit` (shared blocks, plus a partial copy into its
        first fresh block) and fresh blocks for `num_new_tokens` more tokens. Returns what was
        allocated, or None (changing nothing) when the blocks do not fit. The caller (the scheduler)
        sets `num_computed_tokens` from `Allocation.num_cached_tokens` and has the runner do `copy`."""
        assert not request.block_ids, "allocate() is for requests that hold no blocks"
        hit = hit or _NO_HIT
        if not self.can_allocate(request, num_new_tokens, hit):
            return None
        cached = hit.blocks
        for b in cached:
            if self._ref[b] == 0:
                del self._evictable[b]
            self._ref[b] += 1
        if hit.copy_src is not None and self._ref[hit.copy_src] == 0:
            self._evictable.move_to_end(hit.copy_src)  # used: evict it last
        request.block_ids = list(cached)
        request.num_registered_blocks = len(cached)
        num_cached = hit.num_tokens(self.block_size)
        if self.enable_prefix_caching and not request.needs_prompt_logprobs:
            self.prefix_queries += request.num_tokens
            self.prefix_hits += num_cached
        fresh = self._grow(request, _cdiv(num_cached + num_new_tokens, self.block_size) - len(cached))
        copy = None
        if hit.copy_len and hit.copy_src is not None:
            # The copy runs before any forward of this step, so `src` is read before anything
            # (this request included, should `_grow` have recycled it) writes into it.
            copy = KvCopy(hit.copy_src, fresh[0], hit.copy_len)
        return Allocation(cached, tuple(fresh), num_cached, copy)

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
        self._unindex(block)
        self._hash[block] = None
        self._tokens[block] = None

    def _unindex(self, block: int) -> None:
        """Take a block out of its parent's copy index (if it is in one)."""
        parent = self._parent[block]
        if parent is None:
            return
        kids = self._children[parent]
        del kids[block]
        if not kids:
            del self._children[parent]
        self._parent[block] = None

    def _record(self, block: int, parent: int, tokens: tuple[int, ...], h: int | None) -> None:
        self._hash[block] = h
        self._parent[block] = parent
        self._tokens[block] = tokens
        kids = self._children.setdefault(parent, {})
        kids[block] = None
        if h is not None:
            self._by_hash[h] = block
        if len(kids) > MAX_CHILDREN:
            self._drop_child(next(iter(kids)))

    def _drop_child(self, block: int) -> None:
        """Take the oldest child out of the copy index: a full block stays findable by hash, an
        unreferenced partial tail (reachable only through the index) becomes free."""
        if self._hash[block] is not None or self._ref[block] > 0:
            self._unindex(block)
            return
        self._forget(block)
        del self._evictable[block]
        self._free.append(block)

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
            if h not in self._by_hash and self._tokens[block] is None:
                self._record(block, hashes[i - 1] if i else _ROOT_HASH, tuple(toks[i * bs:(i + 1) * bs]), h)
        request.num_registered_blocks = n_full

    def free(self, request: Request, keep_partial: bool = True) -> None:
        """Drop the request's references; cached blocks become evictable, the rest free.

        With `keep_partial` (the request's KV is sound: not a failed request), the computed tokens of
        its first unregistered block are kept as a partial tail for later copies. The tail is released
        first so that, under LRU eviction, a sequence's last blocks are reused before its (more
        shareable) leading blocks.
        """
        if keep_partial and self.enable_prefix_caching:
            self._keep_partial_tail(request)
        for block in reversed(request.block_ids):
            self._ref[block] -= 1
            if self._ref[block] == 0:
                if self._tokens[block] is not None:
                    self._evictable[block] = None
                else:
                    self._free.append(block)
        request.block_ids = []
        request.num_registered_blocks = 0

    def _keep_partial_tail(self, request: Request) -> None:
        bs, i = self.block_size, request.num_registered_blocks
        n = min(request.num_computed_tokens, (i + 1) * bs) - i * bs
        if i >= len(request.block_ids) or n <= 0:
            return
        block = request.block_ids[i]
        if self._ref[block] != 1 or self._tokens[block] is not None:
            return  # shared or already recorded: not this request's to keep
        parent = self._block_hashes(request, i)[i - 1] if i else _ROOT_HASH
        self._record(block, parent, tuple(request.all_token_ids[i * bs:i * bs + n]), None)
