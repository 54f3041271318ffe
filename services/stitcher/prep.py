"""Data prep for everything that enters a prompt: unicode and whitespace normalised, markup stripped,
near-identical passages removed, inventory formatted as a compact table, and passages that read like
instructions to the model marked for the governor (retrieved text is data, never instructions)."""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

# zero-width and bidi controls hide text from a reader but not from a model
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\u00ad]")
_HTML_BLOCK = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_HTML_TAG = re.compile(r"</?[a-zA-Z][^<>]*>")
_MD_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_MD_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+", re.MULTILINE)
_MD_EMPHASIS = re.compile(r"(\*\*|__|\*|_|~~)(?=\S)(.+?)(?<=\S)\1")
_MD_CODE = re.compile(r"`([^`]*)`")
_MD_LIST = re.compile(r"^[ \t]*(?:[-*+]|\d+[.)])[ \t]+", re.MULTILINE)
_MD_QUOTE = re.compile(r"^[ \t]*>[ \t]?", re.MULTILINE)
_MD_RULE = re.compile(r"^[ \t]*(?:[-*_][ \t]*){3,}$", re.MULTILINE)
_SPACE = re.compile(r"[ \t\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")
_WORD = re.compile(r"\w+")

NEAR_DUPLICATE: Final = 0.85  # Jaccard similarity of word 3-shingles above which two passages say the same thing

# phrases that address the model rather than inform the reader: prompt injection planted in documents
_INSTRUCTION_LIKE = re.compile(
    r"|".join(
        [
            r"\b(?:ignore|disregard|forget|override)\b[^.\n]{0,40}\b(?:previous|prior|above|earlier|all|any|your)\b"
            r"[^.\n]{0,20}\b(?:instructions?|rules?|prompts?|guidelines?|context)\b",
            r"\byou are now\b",
            r"\bfrom now on,? you\b",
            r"\bact as (?:an?|the)\b",
            r"\bpretend (?:to be|you are)\b",
            r"\b(?:system|developer) (?:prompt|message|instructions?)\b",
            r"\bnew instructions?\b",
            r"\b(?:reveal|print|repeat|output) (?:your|the) (?:system )?(?:prompt|instructions)\b",
            r"\bdo not (?:tell|inform|mention (?:this )?to) the (?:user|customer)\b",
            r"\b(?:as an ai|as a language model)\b",
            r"</?(?:system|assistant|user)>|<\|im_start\|>|<start_of_turn>|\[/?INST\]",
        ]
    ),
    re.IGNORECASE,
)


def normalise(text: str) -> str:
    """NFKC unicode (full-width letters, ligatures, non-breaking spaces), invisible characters removed, runs of
    spaces collapsed, at most one blank line kept between paragraphs, ends trimmed."""
    text = _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [_SPACE.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def strip_markup(text: str) -> str:
    """Plain text of HTML or markdown: tags, comments, scripts, emphasis, headings, list and quote markers and
    link targets removed (link text kept), entities decoded."""
    text = _HTML_COMMENT.sub(" ", _HTML_BLOCK.sub(" ", text))
    text = _HTML_TAG.sub(" ", text)
    text = _MD_IMAGE.sub(r"\1", text)
    text = _MD_LINK.sub(r"\1", text)
    text = _MD_RULE.sub("", text)
    text = _MD_HEADING.sub("", text)
    text = _MD_QUOTE.sub("", text)
    text = _MD_LIST.sub("", text)
    text = _MD_CODE.sub(r"\1", text)
    text = _MD_EMPHASIS.sub(r"\2", text)
    return html.unescape(text)


def clean(text: str) -> str:
    """What every retrieved text goes through before it reaches a prompt."""
    return normalise(strip_markup(normalise(text)))


def instruction_like(text: str) -> bool:
    """Whether a passage reads like instructions to the model rather than information for the reader."""
    return _INSTRUCTION_LIKE.search(normalise(text)) is not None


def shingles(text: str, size: int = 3) -> frozenset[str]:
    words = _WORD.findall(text.casefold())
    if len(words) <= size:
        return frozenset([" ".join(words)])
    return frozenset(" ".join(words[i : i + size]) for i in range(len(words) - size + 1))


def similarity(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def near_duplicates(texts: Sequence[str], threshold: float = NEAR_DUPLICATE) -> list[int]:
    """Indexes of texts that repeat an earlier one (word 3-shingle Jaccard at or above `threshold`); the first of
    each group is kept, so pass texts best first."""
    kept: list[frozenset[str]] = []
    repeats: list[int] = []
    for index, text in enumerate(texts):
        signature = shingles(text)
        if any(similarity(signature, earlier) >= threshold for earlier in kept):
            repeats.append(index)
        else:
            kept.append(signature)
    return repeats


@dataclass(frozen=True)
class StockLine:
    """One inventory row as it enters a prompt."""

    sku: str
    product: str
    variant: str
    quantity: int
    price_cents: int
    currency: str


INVENTORY_HEADER: Final = "sku | product | variant | in stock | price"


def money(cents: int, currency: str) -> str:
    return f"{cents // 100}.{cents % 100:02d} {currency}"


def stock_row(line: StockLine) -> str:
    """A compact table row: `SW0014-05 | Waxed field jacket | M / olive | 4 | 229.00 USD`."""
    stock = str(line.quantity) if line.quantity > 0 else "0 (sold out)"
    cells = [line.sku, clean(line.product), clean(line.variant) or "-", stock, money(line.price_cents, line.currency)]
    return " | ".join(cell.replace("|", "/") for cell in cells)


def stock_table(rows: Sequence[str]) -> str:
    return "\n".join([INVENTORY_HEADER, *rows])
