"""Grounded answers: the sentences of the stitched knowledge-base passages that answer the question, quoted, with
the passages they came from. What the answerer sends where the configured model is the local base model (which
continues text rather than following instructions), and what replaces a junk model answer.

Extractive and deterministic: sentences are scored by the question's content words they contain, weighted by how
rare each word is among the passages' sentences, and the best one or two are kept in passage order.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from services.wire.models import ContextItem

GROUNDED_VERSION: Final = "grounded-v1"
KNOWLEDGE_SOURCE: Final = "knowledge_base"
MAX_SENTENCES: Final = 2
MIN_SHARED_WORDS: Final = 2  # a sentence must share this many content words with the question (1 for short ones)
MAX_CHARS: Final = 400
SECOND_SENTENCE_SHARE: Final = 0.6
# a complaint wants a person, small talk wants a reply: quoting the knowledge base answers neither
UNGROUNDED_INTENTS: Final = frozenset({"complaint", "small_talk_other"})
# a sentence ends at . ! or ? followed by a space: "18.5 micron" and "1.25 points" stay whole
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[a-z0-9]+")
_STOP: Final = frozenset(
    """a an the and or but if of to in on at by for with from as is are was were be been being do does did doing
    have has had having it its this that these those there here i you he she we they me him her us them my your
    his our their what which who whom whose when where why how can could should would will shall may might must
    not no yes so than then too very just also about any all some each every more most much many such only own
    same other into over under again once please customer customers staff store shop ask asks asking asked tell
    know want wants wanted need needs get got give one""".split()  # noqa: SIM905
)


@dataclass(frozen=True)
class Grounded:
    text: str
    passage_ids: tuple[str, ...]
    shared_words: int


def content_words(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(text.casefold()) if w not in _STOP and len(w) > 1]


def _stem(word: str) -> str:
    for suffix in ("ing", "es", "ed", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def grounded_answer(question: str, items: Sequence[ContextItem]) -> Grounded | None:
    """The best one or two knowledge-base sentences for the question, or None when no sentence shares enough of
    its words (then nothing in the context answers it)."""
    asked = set(content_words(question))
    if not asked:
        return None
    needed = MIN_SHARED_WORDS if len(asked) > 2 else 1
    passages = [item for item in items if item.source == KNOWLEDGE_SOURCE and "instruction_like" not in item.flags]
    sentences = [
        (item.source_id, sentence.strip())
        for item in passages
        for sentence in _SENTENCE_END.split(item.text)
        if len(sentence.strip()) > 12
    ]
    if not sentences:
        return None
    return _by_words(asked, needed, sentences)


def _grounded(chosen: list[tuple[str, str]], shared_words: int) -> Grounded:
    text = " ".join(sentence for _, sentence in chosen)[:MAX_CHARS].strip()
    return Grounded(text=text, passage_ids=tuple(dict.fromkeys(pid for pid, _ in chosen)), shared_words=shared_words)


def _by_words(asked: set[str], needed: int, sentences: list[tuple[str, str]]) -> Grounded | None:
    words = [set(content_words(sentence)) for _, sentence in sentences]
    frequency = Counter(word for sentence_words in words for word in sentence_words)
    # the question's rarest word among the passages is what it asks about ("battery" in "how long does the Echo
    # speaker's battery last"); the product's name is in many sentences and only says which page to read
    rarest = min((frequency[word] for word in asked if frequency[word]), default=0)
    focus = {word for word in asked if frequency[word] == rarest}
    scored = []
    for position, ((passage_id, sentence), sentence_words) in enumerate(zip(sentences, words, strict=True)):
        shared = asked & sentence_words
        if len(shared) < needed:
            continue
        weight = sum(math.log(1 + len(sentences) / frequency[word]) for word in shared)
        scored.append((bool(focus & shared), weight, -position, passage_id, sentence, len(shared)))
    if not scored:
        return None
    ranked = sorted(scored, reverse=True)
    best = [ranked[0]]
    covered = asked & set(content_words(ranked[0][4]))
    for entry in ranked[1:]:
        # a further sentence only where it is nearly as good and covers question words the others do not
        adds = (asked & set(content_words(entry[4]))) - covered
        if len(best) < MAX_SENTENCES and adds and entry[1] >= SECOND_SENTENCE_SHARE * ranked[0][1]:
            best.append(entry)
            covered |= adds
    best.sort(key=lambda entry: -entry[2])  # in passage order
    return _grounded([(entry[3], entry[4]) for entry in best], shared_words=max(entry[5] for entry in best))
