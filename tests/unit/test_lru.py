"""The bounded LRU map (pipelines/io/lru.py) the key stores and the query service's caches share."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.io.lru import LRU


def test_a_count_bound_forgets_the_least_recently_used() -> None:
    cache: LRU[str, int] = LRU(capacity=2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "b" is now the least recently used
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c"), len(cache)) == (1, None, 3, 2)


def test_a_byte_bound_counts_values_and_keeps_none_larger_than_it() -> None:
    cache: LRU[str, bytes] = LRU(max_bytes=10)
    cache.put("a", b"x" * 4)
    cache.put("b", b"y" * 4)
    cache.put("a", b"z" * 5)  # replaced: counted once
    assert cache.held == 9 and cache.get("a") == b"z" * 5
    cache.put("c", b"w" * 3)  # 12 > 10: "b" goes
    assert cache.get("b") is None and cache.held == 8
    cache.put("big", b"!" * 11)
    assert cache.get("big") is None and cache.held == 8
    cache.drop_where(lambda key: key == "a")
    cache.drop(["c", "not kept"])
    assert cache.held == 0 and len(cache) == 0


def test_a_capacity_of_zero_keeps_nothing() -> None:
    cache: LRU[str, int] = LRU(capacity=0)
    cache.put("a", 1)
    assert cache.get("a") is None


def test_a_value_too_large_to_keep_also_drops_the_older_one_under_its_key() -> None:
    cache: LRU[str, bytes] = LRU(max_bytes=4)
    cache.put("a", b"old")
    cache.put("a", b"newer")
    assert cache.get("a") is None and cache.held == 0


def test_a_byte_bound_needs_values_with_a_length() -> None:
    cache: LRU[str, object] = LRU(max_bytes=4)
    with pytest.raises(TypeError, match="with a length"):
        cache.put("a", 42)


@given(st.lists(st.tuples(st.integers(0, 20), st.binary(max_size=12)), max_size=200), st.integers(1, 40))
def test_held_is_always_the_bytes_kept_and_within_the_bound(puts: list[tuple[int, bytes]], bound: int) -> None:
    cache: LRU[int, bytes] = LRU(capacity=8, max_bytes=bound)
    for key, value in puts:
        cache.put(key, value)
        kept = [cache._data[k] for k in cache._data]
        assert cache.held == sum(len(v) for v in kept) <= bound and len(kept) <= 8
        assert cache.get(key) in (value, None)  # the last value put, or nothing: never an older one
