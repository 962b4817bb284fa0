"""Prefix keys, the prefix table and prompt extraction (awqserve/ray/prefix.py): pure, no Ray needed."""
from __future__ import annotations

import json

import pytest

from awqserve.ray.prefix import MAX_PREFIX_CHARS, PrefixTable, RoutingStats, chunk_keys, prompt_text


def test_chunk_keys_are_chained_and_whole_chunks_only() -> None:
    a = chunk_keys("x" * 10 + "y" * 10 + "z" * 5, 10)
    assert len(a) == 2  # the trailing 5 characters are not a whole chunk
    b = chunk_keys("w" * 10 + "y" * 10, 10)
    assert a[1] != b[1]  # same second chunk, different start: a different prefix
    assert chunk_keys("x" * 10 + "y" * 10 + "q" * 10, 10)[:2] == a
    assert chunk_keys("short", 10) == []


def test_table_prefers_the_deepest_owner_among_candidates() -> None:
    t = PrefixTable(chunk_chars=4)
    shallow, deep = t.keys("abcdXXXX"), t.keys("abcdefgh")
    t.record(shallow, "r1")
    t.record(deep, "r2")  # r2 now owns "abcd" too (the latest holder of a prefix)
    m = t.match(t.keys("abcdefghijkl"), ["r1", "r2"])
    assert (m.replica, m.matched, m.total) == ("r2", 2, 3)
    assert t.match(t.keys("abcdefgh"), ["r1"]).replica is None  # r2 is not a candidate
    assert t.match(t.keys("zzzz"), ["r1", "r2"]).replica is None


def test_table_stops_at_the_first_unknown_level() -> None:
    t = PrefixTable(chunk_chars=2)
    keys = t.keys("aabbcc")
    t.record([keys[0]], "r1")
    t.record([keys[2]], "r2")  # cannot happen with chained keys in practice; must not be matched
    assert t.match(keys, ["r1", "r2"]).replica == "r1"


def test_table_is_bounded_and_forgets_dead_replicas() -> None:
    t = PrefixTable(chunk_chars=1, capacity=3)
    t.record(t.keys("abcd"), "r1")
    assert len(t) == 3
    t.record(t.keys("x"), "r2")
    assert len(t) == 3
    t.forget("r1")
    assert len(t) == 1 and t.match(t.keys("x"), ["r2"]).replica == "r2"
    with pytest.raises(ValueError):
        PrefixTable(chunk_chars=0)


def _body(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_prompt_text_of_each_endpoint() -> None:
    chat = {"messages": [{"role": "system", "content": "S"},
                         {"role": "user", "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]}]}
    assert prompt_text("/v1/chat/completions", _body(chat)) == "<system>S<user>AB"
    assert prompt_text("/v1/completions", _body({"prompt": "hello"})) == "hello"
    assert prompt_text("/v1/completions", _body({"prompt": ["first", "second"]})) == "first"
    assert prompt_text("/v1/completions", _body({"prompt": [1, 2, 3]})) == "1 2 3"
    assert prompt_text("/v1/responses", _body({"instructions": "I", "input": "x"})) == "Ix"
    assert prompt_text("/v1/responses", _body({"input": [{"role": "user", "content": "q"}]})) == "<user>q"


def test_prompt_text_ignores_other_routes_and_bad_bodies() -> None:
    assert prompt_text("/v1/models", b"") is None
    assert prompt_text("/v1/chat/completions", b"{not json") is None
    assert prompt_text("/v1/chat/completions", _body([1, 2])) is None
    assert prompt_text("/v1/chat/completions", _body({"messages": "nope"})) is None
    long = prompt_text("/v1/completions", _body({"prompt": "x" * (MAX_PREFIX_CHARS + 10)}))
    assert long is not None and len(long) == MAX_PREFIX_CHARS


def test_routing_stats_hit_rate() -> None:
    s = RoutingStats(routed=10, with_prefix=8, known_prefix=4, prefix_hits=3, fallbacks=1)
    assert s.as_dict()["prefix_hit_rate"] == 0.75
    assert RoutingStats().as_dict()["prefix_hit_rate"] == 0.0
