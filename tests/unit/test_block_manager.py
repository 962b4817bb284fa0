"""BlockManager: allocation, ref counts, prefix caching (chained hashes), LRU eviction, counters."""
from __future__ import annotations

from awqserve.engine.block_manager import BlockManager, KvCopy, PrefixHit
from awqserve.engine.request import Request
from awqserve.engine.sampling_params import SamplingParams

BS = 4


def _req(tokens: list[int], rid: str = "r", params: SamplingParams | None = None) -> Request:
    return Request(rid, tokens, params or SamplingParams(), max_tokens=16)


def _compute(bm: BlockManager, req: Request, n: int) -> None:
    """Pretend the runner computed n more tokens, as the scheduler records after a step."""
    req.num_computed_tokens += n
    bm.cache_full_blocks(req)


def test_allocate_append_free_roundtrip() -> None:
    bm = BlockManager(10, BS)
    req = _req(list(range(10)))
    assert bm.allocate(req, 10)
    assert len(req.block_ids) == 3 and bm.num_free_blocks == 7
    _compute(bm, req, 10)
    assert bm.append_slots(req, 2)  # 12 tokens still fit in 3 blocks
    assert len(req.block_ids) == 3
    req.num_computed_tokens = 12
    assert bm.append_slots(req, 1)  # the 13th token opens a 4th block
    assert len(req.block_ids) == 4 and len(set(req.block_ids)) == 4
    bm.free(req)
    assert req.block_ids == [] and bm.num_free_blocks == 10 and bm.usage == 0.0


def test_allocation_refused_without_side_effects() -> None:
    bm = BlockManager(3, BS)
    big = _req(list(range(20)))
    assert not bm.can_allocate(big, 20)
    assert not bm.allocate(big, 20)
    assert big.block_ids == [] and bm.num_free_blocks == 3
    small = _req(list(range(12)))
    assert bm.allocate(small, 12)
    assert not bm.append_slots(small, 13)  # would need a 4th block
    assert len(small.block_ids) == 3


def test_prefix_hit_shares_blocks_and_skips_computed_tokens() -> None:
    bm = BlockManager(16, BS, enable_prefix_caching=True)
    a = _req(list(range(10)), "a")
    assert bm.find_cached_prefix(a) == PrefixHit()
    bm.allocate(a, 10)
    _compute(bm, a, 10)  # two full blocks registered, the third is partial (a still holds it)
    b = _req(list(range(9)) + [99, 98], "b")
    hit = bm.find_cached_prefix(b)
    cached = list(hit.blocks)
    assert cached == a.block_ids[:2] and hit.copy_src is None
    alloc = bm.allocate(b, b.num_tokens - len(cached) * BS, hit)
    assert alloc is not None and alloc.num_cached_tokens == 8 and list(alloc.cached_blocks) == cached
    assert list(alloc.new_blocks) == b.block_ids[2:] and alloc.copy is None
    assert b.block_ids[:2] == a.block_ids[:2] and b.block_ids[2] != a.block_ids[2]
    assert bm.prefix_hits == 8 and bm.prefix_queries == 10 + 11
    # Shared blocks survive the first owner's free.
    bm.free(a)
    assert bm.num_free_blocks == 16 - 3


def test_prefix_hit_never_covers_the_last_token() -> None:
    bm = BlockManager(16, BS, enable_prefix_caching=True)
    a = _req(list(range(8)), "a")
    bm.allocate(a, 8)
    _compute(bm, a, 8)
    same = _req(list(range(8)), "same")
    # 8 tokens = 2 full cached blocks, but one token must be computed for logits: 1 block shared
    # and 3 of the second block's 4 tokens copied.
    hit = bm.find_cached_prefix(same)
    assert hit == PrefixHit((a.block_ids[0],), a.block_ids[1], 3) and hit.num_tokens(BS) == 7


def test_chained_hash_requires_the_same_prefix() -> None:
    bm = BlockManager(16, BS, enable_prefix_caching=True)
    a = _req([1, 2, 3, 4, 5, 6, 7, 8, 9], "a")
    bm.allocate(a, 9)
    _compute(bm, a, 9)
    # Same second block, different first block: no hit (a block's hash includes its prefix).
    b = _req([0, 2, 3, 4, 5, 6, 7, 8, 9], "b")
    assert bm.find_cached_prefix(b) == PrefixHit()


def test_prompt_logprobs_disable_prefix_lookup() -> None:
    bm = BlockManager(16, BS, enable_prefix_caching=True)
    a = _req(list(range(10)), "a")
    bm.allocate(a, 10)
    _compute(bm, a, 10)
    b = _req(list(range(10)), "b", SamplingParams(prompt_logprobs=1))
    assert bm.find_cached_prefix(b) == PrefixHit()


def test_lru_eviction_of_unreferenced_cached_blocks() -> None:
    bm = BlockManager(4, BS, enable_prefix_caching=True)
    a = _req(list(range(9)), "a")  # 3 blocks, 2 full
    bm.allocate(a, 9)
    _compute(bm, a, 9)
    bm.free(a)
    assert bm.num_free_blocks == 4  # cached blocks count as free (evictable)
    # A one-block request takes never-cached blocks first: a's prefix stays cached.
    c = _req([50, 51], "c")
    bm.allocate(c, 2)
    hit = _req(list(range(9)) + [7], "hit")
    assert len(bm.find_cached_prefix(hit).blocks) == 2
    # Needing all remaining blocks evicts the cached ones (oldest freed first).
    d = _req(list(range(100, 112)), "d")
    assert bm.allocate(d, 12)
    assert bm.find_cached_prefix(_req(list(range(9)) + [7], "miss")) == PrefixHit()
    bm.free(c)
    bm.free(d)
    assert bm.num_free_blocks == 4


def test_reviving_a_cached_block_takes_it_out_of_the_free_pool() -> None:
    bm = BlockManager(3, BS, enable_prefix_caching=True)
    a = _req(list(range(9)), "a")
    bm.allocate(a, 9)
    _compute(bm, a, 9)
    bm.free(a)
    b = _req(list(range(8)) + [70, 71, 72, 73, 74], "b")  # 13 tokens: 4 blocks needed, 2 cached
    hit = bm.find_cached_prefix(b)
    assert len(hit.blocks) == 2
    assert not bm.can_allocate(b, b.num_tokens - 8, hit)
    assert bm.num_free_blocks == 3


def _finish(bm: BlockManager, tokens: list[int], rid: str = "a") -> Request:
    """A request that computed all of `tokens` and was freed."""
    req = _req(tokens, rid)
    bm.allocate(req, len(tokens))
    _compute(bm, req, len(tokens))
    bm.free(req)
    return req


def test_repeated_prompt_reuses_all_but_its_last_token() -> None:
    bm = BlockManager(16, BS, enable_prefix_caching=True)
    a = _req(list(range(11)), "a")  # 2 full blocks + 3 tokens in a partial third
    bm.allocate(a, 11)
    _compute(bm, a, 11)
    blocks = list(a.block_ids)
    tail = blocks[2]
    bm.free(a)
    assert bm.num_free_blocks == 16  # the kept tail is evictable, not lost capacity
    again = _req(list(range(11)), "again")
    hit = bm.find_cached_prefix(again)
    assert hit.blocks == tuple(blocks[:2])
    assert (hit.copy_src, hit.copy_len, hit.num_tokens(BS)) == (tail, 2, 10)
    alloc = bm.allocate(again, 1, hit)
    assert alloc is not None and alloc.num_cached_tokens == 10
    assert alloc.copy == KvCopy(tail, again.block_ids[2], 2) and tail not in again.block_ids
    assert bm.prefix_hits == 10


def test_partial_match_copies_only_the_common_tokens() -> None:
    bm = BlockManager(16, BS, enable_prefix_caching=True)
    _finish(bm, [1, 2, 3, 4, 5, 6, 7])  # tail holds [5, 6, 7]
    b = _req([1, 2, 3, 4, 5, 6, 9, 9, 9], "b")
    hit = bm.find_cached_prefix(b)
    assert len(hit.blocks) == 1 and hit.copy_len == 2
    c = _req([1, 2, 3, 4, 8, 6, 7, 9], "c")  # diverges at the tail's first token
    assert bm.find_cached_prefix(c).copy_len == 0


def test_longest_of_several_tails_wins_and_a_tail_before_any_full_block() -> None:
    bm = BlockManager(16, BS, enable_prefix_caching=True)
    _finish(bm, [1, 2], "short")
    _finish(bm, [1, 2, 3], "long")
    hit = bm.find_cached_prefix(_req([1, 2, 3, 9], "q"))
    assert hit.blocks == () and hit.copy_len == 3


def test_a_failed_request_keeps_no_tail_and_evicted_tails_are_forgotten() -> None:
    bm = BlockManager(2, BS, enable_prefix_caching=True)
    req = _req([1, 2, 3], "failed")
    bm.allocate(req, 3)
    _compute(bm, req, 3)
    bm.free(req, keep_partial=False)
    assert bm.find_cached_prefix(_req([1, 2, 3, 4], "q")) == PrefixHit()
    _finish(bm, [1, 2, 3], "ok")
    assert bm.find_cached_prefix(_req([1, 2, 3, 4], "q")).copy_len == 3
    big = _req(list(range(100, 108)), "big")  # needs both blocks: the tail is evicted
    assert bm.allocate(big, 8)
    assert bm.find_cached_prefix(_req([1, 2, 3, 4], "q")) == PrefixHit()



def test_copy_index_per_parent_is_bounded_and_drops_the_oldest_tails() -> None:
    from awqserve.engine.block_manager import MAX_CHILDREN

    n = MAX_CHILDREN + 3
    bm = BlockManager(n + 1, BS, enable_prefix_caching=True)
    for i in range(n):  # n one-token-tail sequences under the root: only the newest stay indexed
        _finish(bm, [1000 + i], f"r{i}")
    assert bm.find_cached_prefix(_req([1000, 5], "old")) == PrefixHit()
    assert bm.find_cached_prefix(_req([1000 + n - 1, 5], "new")).copy_len == 1
    assert bm.num_free_blocks == n + 1  # dropped tails went back to the free list, nothing leaked
    assert len(bm._free) == 3 + 1


def test_a_full_block_dropped_from_the_copy_index_is_still_shared_by_hash() -> None:
    from awqserve.engine.block_manager import MAX_CHILDREN

    bm = BlockManager(MAX_CHILDREN + 8, BS, enable_prefix_caching=True)
    _finish(bm, [1, 2, 3, 4, 9])  # full block [1, 2, 3, 4] under the root, first in the index
    for i in range(MAX_CHILDREN):
        _finish(bm, [500 + i], f"t{i}")
    hit = bm.find_cached_prefix(_req([1, 2, 3, 4, 9, 9], "q"))
    assert len(hit.blocks) == 1  # still found by its hash
