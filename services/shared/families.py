"""Families of near-identical texts, so that an evaluation never holds one member out while training on its twin.

A text's family is its connected component of near-duplicates: texts are normalised (lower case; digits and
capitalised names masked, so a template filled with other values stays one text) and two texts are twins when the
Jaccard similarity of their word-3-shingles is at least NEAR_DUPLICATE. Deterministic: the same rows give the same
families, numbered in order of first appearance.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from itertools import combinations
from typing import Final

import numpy as np
from numpy.typing import NDArray

NEAR_DUPLICATE: Final = 0.5
SHINGLE: Final = 3

_WORD: Final = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
_SENTENCE_END: Final = frozenset(".!?:;\n")


def normalise(text: str) -> list[str]:
    """Words of `text` in lower case, with numbers as <num> and capitalised words inside a sentence as <name>."""
    words: list[str] = []
    previous_end = 0
    for match in _WORD.finditer(text):
        word = match.group()
        sentence_start = not words or any(ch in _SENTENCE_END for ch in text[previous_end : match.start()])
        previous_end = match.end()
        if any(ch.isdigit() for ch in word):
            words.append("<num>")
        elif not sentence_start and word[0].isupper() and word[1:].islower():
            words.append("<name>")
        else:
            words.append(word.lower())
    return words


def shingles(text: str) -> frozenset[tuple[str, ...]]:
    words = normalise(text)
    if len(words) < SHINGLE:
        return frozenset({tuple(words)})
    return frozenset(tuple(words[i : i + SHINGLE]) for i in range(len(words) - SHINGLE + 1))


def near_duplicate_families(texts: Sequence[str]) -> NDArray[np.int64]:
    """A family number per text (0, 1, ... in order of first appearance): the connected components of
    near-duplicates."""
    # texts that normalise alike are one family outright; only the distinct shingle sets are compared
    distinct: dict[frozenset[tuple[str, ...]], int] = {}
    of_text = [distinct.setdefault(shingles(text), len(distinct)) for text in texts]
    sets = list(distinct)
    holders: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for index, shingle_set in enumerate(sets):
        for shingle in shingle_set:
            holders[shingle].append(index)
    parent = list(range(len(sets)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    checked: set[tuple[int, int]] = set()
    for members in holders.values():
        for i, j in combinations(members, 2):
            if (i, j) in checked or root(i) == root(j):
                continue
            checked.add((i, j))
            if len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= NEAR_DUPLICATE:
                parent[root(i)] = root(j)
    numbers: dict[int, int] = {}
    return np.array([numbers.setdefault(root(i), len(numbers)) for i in of_text], dtype=np.int64)
