"""Junk answers: what a small base model writes that is no answer at all, caught before the store sees it.

`find_junk(answer, question, context, prompt)` runs five checks in this order and returns the first finding, or
None for an answer that may go out:

1. junk.empty: fewer than MIN_WORD_CHARS letters or digits once whitespace, punctuation and chat-template special
   tokens (`<eos>`, `<start_of_turn>`, `<|im_end|>`, `[INST]`) are taken away: "", "...", "<eos>", "4".
2. junk.repetition: a degenerate loop. The same 1- to MAX_LOOP_WORDS-word phrase MIN_LOOP_COPIES or more times
   back to back ("the the the", "<tag> <tags> <tags> <tags>", "in stock in stock in stock"); one sentence
   MIN_SENTENCE_COPIES or more times anywhere; or, over MIN_VARIETY_WORDS or more words, a share of distinct word
   3-grams under MIN_DISTINCT_TRIGRAM_SHARE (a longer phrase looping). A word said twice ("very very") and lists
   ("S, M, L, XL") pass.
3. junk.echoed_markup: prompt or chat-template markup written back: tags (`<request>`, `</context>`, `<tag>`,
   `<start_of_turn>`, `<passage id=…>`, also in the single angle quotes, U+2039 and U+203A, the stitcher puts inside
   sections; a PII token such as `<PERSON_1>` is no markup: tokens are restored later), special tokens
   (`<|im_start|>`, `[INST]`, `<<SYS>>`), and at the start of a line `### Question`-style headers,
   `Question:` / `Answer:` / `Context:` / `Request:` / `Instruction:` / `Response:` headers and the role prefixes
   `user:` / `assistant:` / `system:` / `human:` (`model:` is left out: "Model: X200" is a product answer).
4. junk.echoed_prompt: the answer mostly repeats the question or a prompt message back: at least
   MIN_ECHO_SHARE of its word 3-grams occur in the question or the prompt but not in the context, for answers of
   MIN_ECHO_WORDS or more words. Quoting the context is what an answer should do, so context 3-grams never count.
5. junk.off_topic: the answer shares no content word (lowercased, STOPWORDS left out, crudely stemmed) with the
   question, and too few of its content words occur in the context passages that are about the question (those
   sharing a non-numeric content word with it): under MIN_GROUNDING, or under MIN_LONG_GROUNDING for an answer of
   LONG_ANSWER_TERMS+ content words to a question of SUBSTANTIVE_QUESTION_TERMS+. Only passages about the question
   count, so the store's hours in the prompt do not make "We are open until 21:00" an answer to a return. An answer
   or a question without content words ("Yes.", "Hello") cannot be judged and passes.

A hand-off (an answer whose every sentence uses only the content words of HANDOFF_PHRASES: "I'll check with a
colleague and come back to you.") is exempt from checks 4 and 5: it shares nothing with the question by design, and
the system prompt itself tells the model to say it. It is still checked for 1 to 3: said three times it is a loop.

Pure, deterministic and linear in the input length: the answer is read up to MAX_ANSWER_CHARS (a model answer is at
most a few hundred tokens), the question up to MAX_QUESTION_CHARS, the context and the prompt up to
MAX_SOURCE_CHARS each in all; every pattern is bounded per starting position or cannot backtrack.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

JUNK_GUARD_VERSION: Final = "junk-v1"

EMPTY: Final = "junk.empty"
REPETITION: Final = "junk.repetition"
ECHOED_MARKUP: Final = "junk.echoed_markup"
ECHOED_PROMPT: Final = "junk.echoed_prompt"
OFF_TOPIC: Final = "junk.off_topic"
JUNK_KINDS: Final = (EMPTY, REPETITION, ECHOED_MARKUP, ECHOED_PROMPT, OFF_TOPIC)

MAX_ANSWER_CHARS: Final = 4_000
MAX_QUESTION_CHARS: Final = 4_000
MAX_SOURCE_CHARS: Final = 64_000  # the context passages together, and the prompt messages together
MAX_QUOTE_CHARS: Final = 40  # of the answer, in a finding's detail

MIN_WORD_CHARS: Final = 2
MAX_LOOP_WORDS: Final = 4
MIN_LOOP_COPIES: Final = 3
MIN_SENTENCE_COPIES: Final = 3
MIN_VARIETY_WORDS: Final = 12
MIN_DISTINCT_TRIGRAM_SHARE: Final = 0.5
MIN_ECHO_WORDS: Final = 5
MIN_ECHO_SHARE: Final = 0.6
MIN_GROUNDING: Final = 0.5
MIN_LONG_GROUNDING: Final = 0.8
LONG_ANSWER_TERMS: Final = 6
SUBSTANTIVE_QUESTION_TERMS: Final = 3

# Letters and digits, joined across an apostrophe or a decimal or time separator: "it's", "229.00", "09:00".
# The separator must be followed by a letter or digit, so a failed repetition gives back one character: linear.
WORD: Final = re.compile(r"[^\W_]+(?:['.:,][^\W_]+)*")
# A sentence ends at . ! ? … followed by whitespace, or at a line break; one character starts each match.
SENTENCE_BREAK: Final = re.compile(r"[.!?…]\s+|\n+")
SPECIAL_TOKEN: Final = re.compile(
    r"<\|[^|<>\n]{0,40}\|>|\[/?(?:INST|SYS)\]|<</?SYS>>"
    r"|</?(?:s|bos|eos|pad|unk|mask|start_of_turn|end_of_turn|start_of_image|end_of_image)>",
    re.IGNORECASE,
)
# the governor's PII tokens (`<PERSON_1>`, `<GOV_ID_2>`): a model only sees these, and may write them back
PII_TOKEN: Final = re.compile(r"<[A-Z]+(?:_[A-Z]+)*_\d+>")
MARKUP: Final[tuple[tuple[str, re.Pattern[str]], ...]] = (
    ("special token", SPECIAL_TOKEN),
    ("tag", re.compile(r"[<\u2039]/?[A-Za-z_][\w:|-]{0,31}(?:\s[^<>\u2039\u203a\n]{0,200})?/?[>\u203a]")),
    (
        "header",
        re.compile(
            r"^[ \t>*_-]{0,8}(?:#{1,6}[ \t]{0,4}(?:question|answer|context|request|instruction|response|input|output"
            r"|system|user|assistant)\b|(?:question|answer|context|request|instruction|response)[ \t*_]{0,4}:)",
            re.IGNORECASE | re.MULTILINE,
        ),
    ),
    (
        "role prefix",
        re.compile(r"^[ \t>*_-]{0,8}(?:user|assistant|system|human)[ \t*_]{0,4}:", re.IGNORECASE | re.MULTILINE),
    ),
)

# Function words, yes/no and courtesies, and "store"/"shop": every exchange is about the store, so they link nothing.
STOPWORDS: Final = frozenset(
    """a about above after again against all also am an and any are as at be because been before being below between
    both but by can could did do does doing done down during each either else even ever every few for from further
    get gets got had has have having he her here hers him his how however i if in into is it its itself just let
    may me might mine more most much must my myself neither no nor not now of off often on once only or other our
    ours out over own please quite rather really same shall she should since so some such than that the their them
    then there these they this those though through thus to too under until up upon us very was we were what when
    where whether which while who whom whose why will with within without would yes yeah yet you your yours ok okay
    sure thanks thank sorry hi hello hey well still already store shop
    can't cannot don't doesn't didn't won't wouldn't couldn't shouldn't isn't aren't wasn't weren't haven't hasn't
    i'll i'm i've i'd we'll we're we've we'd you'll you're you've you'd it'll that's there's here's what's
    let's""".split()  # noqa: SIM905
)

HANDOFF_PHRASES: Final = (
    "I'll check with a colleague and come back to you.",
    "I'll check with a colleague and get back to you.",
    "Let me check with a colleague.",
    "I'll ask a colleague.",
    "A colleague will help you shortly.",
    "A colleague will be with you in a moment.",
    "One moment, please.",
    "Sorry, we can't do that without a manager.",
    "I'll ask a manager.",
    "A manager needs to approve this.",
    "A manager will decide and follow up with you.",
    "Please ask at the service desk.",
    # the answerer's HOLD_REPLY (guard.BLOCK_REPLY), which stands in for an empty completion
    "Thanks for your patience: a colleague will help you with this request shortly.",
)


@dataclass(frozen=True)
class JunkFinding:
    kind: str  # one of JUNK_KINDS
    detail: str  # why, with the measured value and the threshold; quotes at most MAX_QUOTE_CHARS of the answer


def find_junk(
    answer: str, question: str, context: Sequence[str] = (), prompt: Sequence[str] = ()
) -> JunkFinding | None:
    """The first junk check `answer` fails (see the module docstring), or None when it may go out."""
    text = answer.strip()[:MAX_ANSWER_CHARS]
    words = _words(text)
    finding = _empty(text) or _repetition(text, words) or _echoed_markup(text)
    if finding is not None or is_handoff(text):
        return finding
    question = question[:MAX_QUESTION_CHARS]
    passages = _capped([context] if isinstance(context, str) else context)
    messages = _capped([prompt] if isinstance(prompt, str) else prompt)
    return _echoed_prompt(words, question, passages, messages) or _off_topic(words, question, passages)


def is_handoff(answer: str) -> bool:
    """Every sentence of `answer` uses only the content words of HANDOFF_PHRASES, and it uses at least one."""
    used: set[str] = set()
    for sentence in SENTENCE_BREAK.split(answer[:MAX_ANSWER_CHARS]):
        terms = _terms(_words(sentence))
        if not terms <= HANDOFF_TERMS:
            return False
        used |= terms
    return bool(used)


def _empty(text: str) -> JunkFinding | None:
    letters = sum(1 for char in SPECIAL_TOKEN.sub(" ", text) if char.isalnum())
    if letters >= MIN_WORD_CHARS:
        return None
    return JunkFinding(
        EMPTY,
        f"{letters} letter(s) or digit(s) left without whitespace, punctuation and special tokens "
        f"(at least {MIN_WORD_CHARS} needed)",
    )


def _repetition(text: str, words: list[str]) -> JunkFinding | None:
    for size in range(1, MAX_LOOP_WORDS + 1):
        loop = _loop(words, size)
        if loop is not None:
            start, copies = loop
            phrase = _quote(" ".join(words[start : start + size]))
            return JunkFinding(
                REPETITION,
                f"{phrase} repeats {copies} times back to back (junk from {MIN_LOOP_COPIES} copies of a phrase of "
                f"1 to {MAX_LOOP_WORDS} words)",
            )
    sentences = Counter(key for key in (tuple(_words(s)) for s in SENTENCE_BREAK.split(text)) if key)
    if sentences:
        sentence, copies = sentences.most_common(1)[0]
        if copies >= MIN_SENTENCE_COPIES:
            return JunkFinding(
                REPETITION,
                f"the sentence {_quote(' '.join(sentence))} occurs {copies} times (junk from {MIN_SENTENCE_COPIES})",
            )
    if len(words) < MIN_VARIETY_WORDS:
        return None
    grams = _trigrams(words)
    share = len(set(grams)) / len(grams)
    if share >= MIN_DISTINCT_TRIGRAM_SHARE:
        return None
    return JunkFinding(
        REPETITION,
        f"{share:.0%} of the answer's {len(grams)} word 3-grams are distinct "
        f"(at least {MIN_DISTINCT_TRIGRAM_SHARE:.0%} needed over {MIN_VARIETY_WORDS}+ words)",
    )


def _loop(words: list[str], size: int) -> tuple[int, int] | None:
    """Where the first run of MIN_LOOP_COPIES or more copies of a `size`-word phrase starts, and its copies."""
    run = 0  # positions in a row where the word equals the one `size` words on
    for i in range(len(words) - size):
        if words[i] == words[i + size]:
            run += 1
            continue
        if run // size + 1 >= MIN_LOOP_COPIES:
            return i - run, run // size + 1
        run = 0
    if run // size + 1 >= MIN_LOOP_COPIES:
        return len(words) - size - run, run // size + 1
    return None


def _echoed_markup(text: str) -> JunkFinding | None:
    for name, pattern in MARKUP:
        for match in pattern.finditer(text):
            if PII_TOKEN.fullmatch(match.group(0)):
                continue
            return JunkFinding(
                ECHOED_MARKUP, f"prompt markup ({name}) {_quote(match.group(0).strip())} at character {match.start()}"
            )
    return None


def _echoed_prompt(
    words: list[str], question: str, passages: Sequence[str], messages: Sequence[str]
) -> JunkFinding | None:
    if len(words) < MIN_ECHO_WORDS:
        return None
    asked = _trigram_set([question, *messages])
    quoted = _trigram_set(passages)
    grams = _trigrams(words)
    share = sum(1 for gram in grams if gram in asked and gram not in quoted) / len(grams)
    if share < MIN_ECHO_SHARE:
        return None
    return JunkFinding(
        ECHOED_PROMPT,
        f"{share:.0%} of the answer's {len(grams)} word 3-grams repeat the question or the prompt and not the "
        f"context (junk from {MIN_ECHO_SHARE:.0%}, answers of {MIN_ECHO_WORDS}+ words)",
    )


def _off_topic(words: list[str], question: str, passages: Sequence[str]) -> JunkFinding | None:
    answer_terms = _terms(words)
    question_terms = _terms(_words(question))
    if not answer_terms or not question_terms or answer_terms & question_terms:
        return None
    linking = {term for term in question_terms if not _numeric(term)}
    about_question: set[str] = set()
    for passage in passages:
        terms = _terms(_words(passage))
        if terms & linking:
            about_question |= terms
    grounding = len(answer_terms & about_question) / len(answer_terms)
    long = len(answer_terms) >= LONG_ANSWER_TERMS and len(question_terms) >= SUBSTANTIVE_QUESTION_TERMS
    needed = MIN_LONG_GROUNDING if long else MIN_GROUNDING
    if grounding >= needed:
        return None
    return JunkFinding(
        OFF_TOPIC,
        f"none of the answer's {len(answer_terms)} content words is among the question's {len(question_terms)}, and "
        f"{grounding:.0%} are in context about the question (at least {needed:.0%} needed)",
    )


def _words(text: str) -> list[str]:
    return WORD.findall(text.lower().replace("\u2019", "'"))


def _terms(words: Iterable[str]) -> set[str]:
    """Content words: stopwords left out, the rest crudely stemmed."""
    return {_stem(word) for word in words if word not in STOPWORDS} - STOP_TERMS


def _stem(word: str) -> str:
    """Plural -s/-es/-ies, -ing and -ed off, then a final -e: close, closes, closed and closing all give "clos"."""
    if word.endswith("'s"):
        word = word[:-2]
    if not word.isalpha():
        return word
    if word.endswith("ing") and len(word) >= 6:
        word = word[:-3]
    elif word.endswith("ed") and len(word) >= 5:
        word = word[:-2]
    elif word.endswith("ies") and len(word) >= 5:
        word = word[:-3] + "y"
    elif word.endswith(("ses", "xes", "zes", "ches", "shes")) and len(word) >= 5:
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) >= 4:
        word = word[:-1]
    return word[:-1] if word.endswith("e") and len(word) >= 4 else word


def _numeric(term: str) -> bool:
    return not any(char.isalpha() for char in term)


def _trigrams(words: Sequence[str]) -> list[tuple[str, str, str]]:
    return list(zip(words, words[1:], words[2:], strict=False))


def _trigram_set(texts: Iterable[str]) -> set[tuple[str, str, str]]:
    return {gram for text in texts for gram in _trigrams(_words(text))}


def _capped(texts: Sequence[str]) -> list[str]:
    """`texts` cut to MAX_SOURCE_CHARS in all, in order."""
    kept: list[str] = []
    left = MAX_SOURCE_CHARS
    for text in texts:
        if left <= 0:
            break
        kept.append(text[:left])
        left -= len(kept[-1])
    return kept


def _quote(text: str) -> str:
    flat = " ".join(text.split()[:MAX_QUOTE_CHARS])
    return repr(flat if len(flat) <= MAX_QUOTE_CHARS else flat[: MAX_QUOTE_CHARS - 1] + "…")


# built with the stemmer above: a stemmed stopword ("stores" -> "stor") is no content word either
STOP_TERMS: Final = frozenset(_stem(word) for word in STOPWORDS)
HANDOFF_TERMS: Final = frozenset(term for phrase in HANDOFF_PHRASES for term in _terms(_words(phrase)))
