"""Inventory context: the stock rows of the request's store that the request is about, found by SKU or by the
product and size/colour words in its text, as compact table rows with their versions."""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from typing import Final, NamedTuple

from services.runtime.reference import GroupedReferenceTable
from services.stitcher.prep import StockLine, stock_row
from services.wire.codec import AvroCodec
from services.wire.models import ContextItem, InventoryItem

MAX_ROWS: Final = 12
MIN_COVERAGE: Final = 0.5  # a product must have more than this share of the request's product words
_SKU = re.compile(r"\bSW\d{4}(?:-\d{2})?\b", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+")
_LETTER_SIZE = re.compile(r"\b(XXS|XS|XXL|XL|M|L)\b")  # upper case only: "a", "I" and "s" are words
_SIZE_WORD = re.compile(r"\bsize\s+(xxs|xs|s|m|l|xl|xxl|\d{1,2})\b", re.IGNORECASE)
_NAMED_SIZE = {"small": "S", "medium": "M", "large": "L"}
_EU_SIZE = re.compile(r"\bEU\s?(\d{2})\b", re.IGNORECASE)
_SHOE_SIZE = re.compile(r"\b(?:in an?|in|a|sz|size)\s(3[5-9]|4[0-7])s?\b", re.IGNORECASE)
_AGE = re.compile(r"\bage\s?(\d{1,2}-\d{1,2})\b", re.IGNORECASE)
_CAPACITY = re.compile(r"\b(\d{2,4})\s?(mm|gb|tb)\b", re.IGNORECASE)
_WAIST_AFTER = re.compile(r"\b(\d{2})\s?(?:waist|w)\b", re.IGNORECASE)
_LEG = re.compile(r"\b(?:(\d{2})\s?(?:leg|inside leg|l)|leg\s(\d{2}))\b", re.IGNORECASE)
_WAIST_SLASH_LEG = re.compile(r"\b(2[68]|3\d)\s?[/x]\s?(3[0-6])\b")
_WAIST = re.compile(r"\b(?:w|waist\s*)(\d{2})\b", re.IGNORECASE)
# words that say nothing about which product is meant
_GENERIC: Final = frozenset(
    """a an the in on of for to and or is are do does did you we your our have has any some this that these those
    it its there left available stock stocked size sizes colour color price cost how much many what which
    can could please check me my i still got get one pair kit with""".split()  # noqa: SIM905
)


class StockRow(NamedTuple):
    """One store's stock of one SKU: a tuple, since the full seed holds a few hundred thousand of them."""

    store_id: str
    sku: str
    product: str
    variant: str
    quantity: int
    price_cents: int
    currency: str
    updated_at: int

    @property
    def key(self) -> str:
        return f"{self.store_id}:{self.sku}"


def stock_row_of(item: InventoryItem) -> StockRow:
    """The lean row kept in the table; repeated strings are interned, so thousands of stores share them."""
    return StockRow(
        sys.intern(item.store_id),
        item.sku,
        sys.intern(item.product),
        sys.intern(item.variant),
        item.quantity,
        item.price_cents,
        sys.intern(item.currency),
        item.updated_at,
    )


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def words_of(text: str) -> frozenset[str]:
    return frozenset(_stem(w) for w in _WORD.findall(text.casefold()) if w not in _GENERIC)


@functools.lru_cache(maxsize=8192)
def _product_words(product: str) -> frozenset[str]:
    return words_of(product)


def sizes_in(text: str) -> frozenset[str]:
    """Sizes a request names, as they are written in variants (M, EU 42, W32)."""
    found = {m.upper() for m in _LETTER_SIZE.findall(text)}
    for size in _SIZE_WORD.findall(text):
        found.add(f"EU {size}" if size.isdigit() else size.upper())
    found.update(_NAMED_SIZE[w] for w in _WORD.findall(text.casefold()) if w in _NAMED_SIZE)
    found.update(f"EU {size}" for size in _EU_SIZE.findall(text))
    found.update(f"EU {size}" for size in _SHOE_SIZE.findall(text))
    found.update(f"age {ages}" for ages in _AGE.findall(text))
    found.update(
        f"{number} {unit.upper() if unit.lower() != 'mm' else 'mm'}" for number, unit in _CAPACITY.findall(text)
    )
    waists = _WAIST_AFTER.findall(text) or _WAIST.findall(text)  # "34 waist 32 leg": the 32 is the leg
    legs = [leg or leg_after for leg, leg_after in _LEG.findall(text)]
    found.update(f"W{waist} L{leg}" for waist, leg in _WAIST_SLASH_LEG.findall(text))
    found.update(f"W{waist} L{leg}" for waist in waists for leg in legs)
    found.update(f"W{waist}" for waist in waists if not legs)
    return frozenset(found)


def _variant_parts(variant: str) -> tuple[list[str], frozenset[str]]:
    """(size-ish parts, colour words) of a variant such as `M / olive` or `EU 42 / black`."""
    parts = [p.strip() for p in variant.split("/")]
    colour_part = parts[-1] if len(parts) > 1 or not any(c.isdigit() for c in parts[0]) else ""
    return parts, frozenset(_stem(w) for w in _WORD.findall(colour_part.casefold()))


def _narrow(rows: list[StockRow], sizes: frozenset[str], words: frozenset[str]) -> list[StockRow]:
    """The rows of the sizes and colours a request names, when it names any that these rows have."""
    colours = words & frozenset().union(*(_variant_parts(r.variant)[1] for r in rows))
    narrowed = []
    for row in rows:
        parts, row_colours = _variant_parts(row.variant)
        size_ok = not sizes or any(p in sizes or p.split(" ")[0] in sizes for p in parts)
        if size_ok and (not colours or colours & row_colours):
            narrowed.append(row)
    return narrowed


def relevant_rows(
    text: str, rows: Iterable[StockRow], vocabulary: Set[str] | None = None, limit: int = MAX_ROWS
) -> list[tuple[StockRow, float]]:
    """(row, relevance 0..1) for the rows a request is about, best first: SKUs it names; else the products that
    share at least half of the request's product words (words of any product name in `vocabulary`, the whole
    catalogue's by default these rows'), the best of them only, narrowed to the sizes and colours it names."""
    candidates = list(rows)
    skus = {s.upper() for s in _SKU.findall(text)}
    if skus:
        named = [r for r in candidates if r.sku in skus or r.sku.split("-")[0] in skus]
        return [(r, 1.0) for r in sorted(named, key=lambda r: r.sku)[:limit]]
    known = (
        vocabulary if vocabulary is not None else frozenset().union(*(_product_words(r.product) for r in candidates))
    )
    words = words_of(text) & known
    if not words:
        return []
    scored: dict[str, tuple[float, float]] = {}
    for row in candidates:
        if row.product not in scored:
            product_words = _product_words(row.product)
            shared = len(words & product_words)
            scored[row.product] = (shared / len(words), shared / max(1, len(product_words)))
    best = max(scored.values(), default=(0.0, 0.0))
    if best[0] <= MIN_COVERAGE:
        return []
    chosen = [r for r in candidates if scored[r.product] == best]
    result = _narrow(chosen, sizes_in(text), words_of(text)) or chosen
    result.sort(key=lambda r: (r.product, r.sku))
    return [(r, best[0]) for r in result[:limit]]


class InventoryTable(GroupedReferenceTable[StockRow]):
    """`ref.inventory` by store, plus the vocabulary of every product name seen (what counts as a product word)."""

    def __init__(self, *, bootstrap: str, topic: str, codec: AvroCodec) -> None:
        super().__init__(
            bootstrap=bootstrap,
            topic=topic,
            record="InventoryItem",
            model=InventoryItem,
            codec=codec,
            key_of=lambda row: row.key,
            parse=stock_row_of,
        )
        self.vocabulary: set[str] = set()
        self._products: set[str] = set()
        # one row per SKU anywhere in the chain: what a product and its variants are, for a store not carrying it
        self.catalogue: dict[str, StockRow] = {}

    def put(self, row: StockRow) -> None:
        super().put(row)
        self.catalogue.setdefault(row.sku, row)
        if row.product not in self._products:
            self._products.add(row.product)
            self.vocabulary |= _product_words(row.product)

    def in_stock_at(self, store_ids: Iterable[str], skus: Sequence[str]) -> list[tuple[str, int]]:
        return in_stock_at(self.group, store_ids, skus)

    def items_for(self, store_id: str, text: str, limit: int = MAX_ROWS) -> list[ContextItem]:
        return inventory_items(text, self.group(store_id).values(), self.vocabulary, limit)


def in_stock_at(
    group: Callable[[str], Mapping[str, StockRow]], store_ids: Iterable[str], skus: Sequence[str]
) -> list[tuple[str, int]]:
    """(store id, units of these SKUs on hand) for each of the stores holding any, most units first."""
    found = []
    for store_id in store_ids:
        rows = group(store_id)
        units = sum(max(0, row.quantity) for sku in skus if (row := rows.get(f"{store_id}:{sku}")) is not None)
        if units > 0:
            found.append((store_id, units))
    found.sort(key=lambda pair: (-pair[1], pair[0]))
    return found


def inventory_items(
    text: str, rows: Iterable[StockRow], vocabulary: Set[str] | None = None, limit: int = MAX_ROWS
) -> list[ContextItem]:
    """One item per relevant row: a compact table row, versioned by the row's updated_at."""
    return [
        ContextItem(
            source="inventory",
            source_id=row.key,
            version=str(row.updated_at),
            score=round(score, 4),
            text=stock_row(StockLine(row.sku, row.product, row.variant, row.quantity, row.price_cents, row.currency)),
        )
        for row, score in relevant_rows(text, rows, vocabulary, limit)
    ]
