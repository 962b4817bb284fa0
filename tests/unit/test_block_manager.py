"""BlockManager: allocation, ref counts, prefix caching (chained hashes), LRU eviction, counters."""
from __future__ import annotations

from awqserve.engine.block_manager import BlockManager
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
    assert bm.find_cached_prefix(a) == []
    bm.allocate(a, 10)
    _compute(bm, a, 10)  # two full blocks registered, the third is partial
    b = _req(list(range(9)) + [99, 98], "b")
    cached = bm.find_cached_prefix(b)
    assert cached == a.block_ids[:2]
    alloc = bm.allocate(b, b.num_tokens - len(cached) * BS, cached)
    assert alloc is not None and alloc.num_cached_tokens == 8 and list(alloc.cached_blocks) == cached
    assert list(alloc.new_blocks) == b.block_ids[2:]
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
    # 8 tokens = 2 full cached blocks, but one token must be computed for logits: 1 block only.
    assert len(bm.find_cached_prefix(same)) == 1


def test_chained_hash_requires_the_same_prefix() -> None:
    bm = BlockManager(16, BS, enable_prefix_caching=True)
    a = _req([1, 2, 3, 4, 5, 6, 7, 8, 9], "a")
    bm.allocate(a, 9)
    _compute(bm, a, 9)
    # Same second block, different first block: no hit (a block's hash includes its prefix).
    b = _req([0, 2, 3, 4, 5, 6, 7, 8, 9], "b")
    assert bm.find_cached_prefix(b) == []


def test_prompt_logprobs_disable_prefix_lookup() -> None:
    bm = BlockManager(16, BS, enable_prefix_caching=True)
    a = _req(list(range(10)), "a")
    bm.allocate(a, 10)
    _compute(bm, a, 10)
    b = _req(list(range(10)), "b", SamplingParams(prompt_logprobs=1))
    assert bm.find_cached_prefix(b) == []


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
    assert len(bm.find_cached_prefix(hit)) == 2
    # Needing all remaining blocks evicts the cached ones (oldest freed first).
    d = _req(list(range(100, 112)), "d")
    assert bm.allocate(d, 12)
    assert bm.find_cached_prefix(_req(list(range(9)) + [7], "miss")) == []
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
    cached = bm.find_cached_prefix(b)
    assert len(cached) == 2
    assert not bm.can_allocate(b, b.num_tokens - 8, cached)
    assert bm.num_free_blocks == 3
