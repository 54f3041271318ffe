"""The shared runtime's byte- and count-bounded LRU cache, and the sizes it charges its entries by default."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from services.runtime.cache import BoundedCache, entry_size, size_of
from services.wire.models import TextEmbedding

MiB = 1 << 20


def sized(max_entries: int, max_bytes: int) -> BoundedCache[str, int]:
    """A cache whose entries cost what their value says, so a test states sizes exactly."""
    return BoundedCache(max_entries, max_bytes, size_of=lambda _key, value: value)


def test_the_least_recently_used_entry_is_evicted_first_and_a_read_counts_as_a_use() -> None:
    cache = sized(3, 1_000)
    for key in "abc":
        cache.put(key, 1)
    assert cache.get("a") == 1
    cache.put("d", 1)
    assert "b" not in cache and all(key in cache for key in "acd")


def test_peeking_reads_an_entry_without_keeping_it_longer() -> None:
    cache = sized(2, 1_000)
    cache.put("a", 1)
    cache.put("b", 1)
    assert cache.peek("a") == 1
    cache.put("c", 1)
    assert "a" not in cache and cache.peek("a") is None and "b" in cache


def test_the_cache_never_holds_more_entries_than_its_count_bound() -> None:
    cache = sized(100, 1 << 30)
    for n in range(1_000):
        cache.put(str(n), 1)
    assert len(cache) == 100 and "999" in cache and "899" not in cache


def test_the_byte_bound_evicts_the_oldest_entries_until_the_new_one_fits() -> None:
    cache = sized(100, 100)
    cache.put("a", 40)
    cache.put("b", 40)
    assert cache.put("c", 50)
    assert "a" not in cache and "b" in cache and "c" in cache, "only as many go as make room"
    assert cache.bytes_held == 90
    cache.put("d", 95)
    assert len(cache) == 1 and cache.bytes_held == 95


def test_an_entry_bigger_than_the_whole_budget_is_not_cached_and_evicts_nothing() -> None:
    cache = sized(100, 100)
    cache.put("a", 60)
    assert not cache.put("huge", 101)
    assert "huge" not in cache and "a" in cache and cache.bytes_held == 60


def test_a_key_given_a_value_too_big_to_cache_no_longer_holds_its_old_one() -> None:
    cache = sized(100, 100)
    cache.put("a", 10)
    cache.put("a", 500)
    assert "a" not in cache and cache.bytes_held == 0


def test_replacing_and_popping_an_entry_keep_the_bytes_held_exact() -> None:
    cache = sized(100, 100)
    cache.put("a", 30)
    cache.put("a", 20)
    assert len(cache) == 1 and cache.bytes_held == 20
    assert cache.pop("a") == 20 and cache.pop("a") is None
    assert len(cache) == 0 and cache.bytes_held == 0


def test_a_cache_bounded_to_no_entries_keeps_nothing() -> None:
    cache = sized(0, 100)
    assert not cache.put("a", 1) and len(cache) == 0


def test_ten_thousand_texts_of_a_mebibyte_each_hold_no_more_than_the_byte_budget() -> None:
    cache: BoundedCache[str, str] = BoundedCache(10_000, 64 * MiB)
    text = "x" * MiB  # one string for every entry: counted once per entry, as if each were its own
    for n in range(10_000):
        cache.put(f"text {n}", text)
    assert cache.bytes_held <= 64 * MiB and len(cache) == 63


def test_texts_and_bytes_cost_their_length_and_a_vector_its_buffer_even_as_a_view() -> None:
    assert size_of("x" * 10_000) >= 10_000 and size_of(b"x" * 10_000) >= 10_000
    vectors = np.zeros((100, 384), dtype=np.float32)
    assert size_of(vectors) >= vectors.nbytes
    assert size_of(vectors[0]) >= 384 * 4, "a row keeps its whole matrix alive; at least its own bytes count"


def test_containers_models_and_dataclasses_cost_what_they_hold() -> None:
    floats = np.random.default_rng(0).random(384).tolist()
    assert size_of(floats) >= 384 * sys.getsizeof(1.0)
    assert size_of({"text": "y" * 5_000, "nested": ["z" * 5_000]}) >= 10_000
    embedding = TextEmbedding(model="m", tokens=3, vector=b"\0" * 1_536)
    assert size_of(embedding) >= 1_536

    @dataclass(frozen=True, slots=True)
    class Held:
        text: str

    assert size_of(Held("w" * 4_000)) >= 4_000
    assert entry_size("k" * 1_000, "v" * 1_000) >= 2_000


operations = st.lists(
    st.tuples(st.sampled_from(["put", "get", "pop"]), st.integers(0, 20), st.integers(0, 400)), max_size=200
)


@given(st.integers(0, 10), st.integers(0, 300), operations)
def test_whatever_is_put_the_cache_stays_within_both_bounds_and_counts_its_bytes_exactly(
    max_entries: int, max_bytes: int, ops: list[tuple[str, int, int]]
) -> None:
    cache = sized(max_entries, max_bytes)
    expected: dict[str, int] = {}  # what a reference LRU holds, least recently used first
    for operation, number, size in ops:
        key = str(number)
        if operation == "put":
            expected.pop(key, None)
            if size <= max_bytes and max_entries > 0:
                expected[key] = size
                while len(expected) > max_entries or sum(expected.values()) > max_bytes:
                    del expected[next(iter(expected))]
            assert cache.put(key, size) == (key in expected)
        elif operation == "get":
            assert cache.get(key) == expected.get(key)
            if key in expected:
                expected[key] = expected.pop(key)
        else:
            assert cache.pop(key) == expected.pop(key, None)
        assert cache.bytes_held <= max_bytes and len(cache) <= max_entries
        assert cache.bytes_held == sum(expected.values()) and len(cache) == len(expected)
    assert {str(n) for n in range(21) if str(n) in cache} == set(expected)
