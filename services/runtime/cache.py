"""What a process remembers between records (texts, vectors, answers), bounded twice: in entries and in bytes, so
10,000 remembered texts of 1 MiB each cannot hold 10 GB. The least recently used entry goes first."""

from __future__ import annotations

import dataclasses
import sys
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Final, Generic, TypeVar

import numpy as np
from pydantic import BaseModel

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
# A stage keeps the embedding it made of a request text from its decision until its output record is composed:
# request id -> TextEmbedding, bounded (a record that fails in between leaves one behind).
PENDING_EMBEDDINGS: Final = 4_096  # far above the records one process has in flight (256)
PENDING_EMBEDDING_BYTES: Final = 16 << 20  # about 2.2 KB an embedding: the count binds first
# tested first, by exact type: a vector kept as a list is hundreds of floats, and sizing it through the isinstance
# tests below took eight times as long (1 ms for 384 floats)
_SCALARS = frozenset({int, float, bool, type(None)})


def size_of(value: object) -> int:
    """About how many bytes `value` keeps alive: its own size, plus its items' for containers, dataclasses and
    pydantic models (an object shared by several is counted for each). Constant time for texts and arrays, linear
    in the items of a container. Any other object counts its own size only: a cache of those takes a size_of of
    its own."""
    if type(value) in _SCALARS:
        return sys.getsizeof(value)
    if isinstance(value, str | bytes | bytearray):
        return sys.getsizeof(value)
    if isinstance(value, np.ndarray):
        # a view's getsizeof leaves out the buffer it looks into, which the view keeps alive all the same
        return sys.getsizeof(value) + (value.nbytes if value.base is not None else 0)
    if isinstance(value, Mapping):
        return sys.getsizeof(value) + sum(size_of(key) + size_of(item) for key, item in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return sys.getsizeof(value) + sum(map(size_of, value))
    if isinstance(value, BaseModel):
        return sys.getsizeof(value) + size_of(value.__dict__)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return sys.getsizeof(value) + sum(size_of(getattr(value, field.name)) for field in fields)
    return sys.getsizeof(value)


def entry_size(key: object, value: object) -> int:
    """The default size of a cache entry: its key's and its value's."""
    return size_of(key) + size_of(value)


class BoundedCache(Generic[K, V]):
    """A least-recently-used cache holding at most `max_entries` entries and `max_bytes` bytes (as `size_of`
    measures an entry), whichever binds first. An entry bigger than the whole byte budget is not cached: keeping it
    would evict everything else for one entry. A value of None reads as a miss. Not thread-safe: callers that share
    one across threads lock it."""

    def __init__(self, max_entries: int, max_bytes: int, size_of: Callable[[K, V], int] = entry_size) -> None:
        if max_entries < 0 or max_bytes < 0:
            raise ValueError(f"cache bounds must not be negative, got {max_entries} entries and {max_bytes} bytes")
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._size_of = size_of
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()  # key -> (value, its size), oldest first
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    @property
    def bytes_held(self) -> int:
        """The sum of the sizes of the entries held, never above max_bytes."""
        return self._bytes

    def get(self, key: K) -> V | None:
        """The value cached for `key`, now the most recently used; None when there is none."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def peek(self, key: K) -> V | None:
        """The value cached for `key` without counting as a use (it is evicted when it would have been)."""
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def put(self, key: K, value: V) -> bool:
        """Caches `value` as the most recently used entry, evicting the least recently used ones until both
        bounds hold; returns whether it was cached. One too big to cache replaces what `key` held by nothing."""
        self.pop(key)
        size = self._size_of(key, value)
        if size > self.max_bytes or self.max_entries == 0:
            return False
        self._entries[key] = (value, size)
        self._bytes += size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _key, (_value, evicted) = self._entries.popitem(last=False)
            self._bytes -= evicted
        return True

    def pop(self, key: K) -> V | None:
        """Removes and returns the value cached for `key`; None when there is none."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        self._bytes -= entry[1]
        return entry[0]

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
