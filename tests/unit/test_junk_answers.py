"""Junk answers from the local base model (empty, looping, echoed markup or prompt, off topic) are found with the
right kind, and the many shapes of a good answer (prices, stock rows, hours, hand-offs, quoted policy) pass.

Decided here: a bare "Yes." or "No." to a yes/no question passes (no content word, so its topic cannot be measured;
whether it is right is the output guard's job), a single character ("4") is empty, and "Answer: Answer: Answer:" is
a loop before it is echoed markup (the checks run in order)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.answerer.junk import (
    ECHOED_MARKUP,
    ECHOED_PROMPT,
    EMPTY,
    HANDOFF_PHRASES,
    JUNK_KINDS,
    MAX_QUOTE_CHARS,
    OFF_TOPIC,
    REPETITION,
    JunkFinding,
    find_junk,
    is_handoff,
)
from services.answerer.stage import HOLD_REPLY
from services.shared.pii import TOKEN, TOKEN_TYPES

STOCK_QUESTION = "Is the waxed field jacket in stock at this store?"
RETURN_QUESTION = "Summarise this return: the toaster came back unopened and the shopper had no receipt."
ROWS = (
    "SW0014-05 | Waxed field jacket | M / olive | 4 | 229.00 USD",
    "SW0014-06 | Waxed field jacket | L / olive | 0 (sold out) | 229.00 USD",
    "SW0014-07 | Waxed field jacket | XL / olive | 2 | 229.00 USD",
)
HOURS = (
    "Store 0417 is open now, until 21:00 today. Tomorrow (Saturday 5 December): 10:00-18:00. Regular hours: "
    "Mon-Fri 09:00-21:00, Sat 10:00-18:00, Sun closed. Local time now 14:05 on Friday 4 December (America/Chicago)."
)
RETURNS = (
    "Goods can be brought back within 30 days of purchase with the receipt, unused and with their tags; the "
    "refund goes back to the original payment method. Without a receipt we look the purchase up by card or loyalty "
    "account. If the purchase cannot be found, we offer store credit at the lowest selling price of the item in the "
    "last 30 days. Items bought at a sale or clearance price can be returned within 14 days with a receipt, and "
    "only the price actually paid is refunded. Card refunds take three to five business days to show on the "
    "statement."
)
SYSTEM = (
    "You are the assistant for store staff at a retail chain. Answer in one to three short sentences, using only "
    "the facts in the sections below. If they do not say, say you will check with a colleague."
)
CONTEXT = (HOURS, *ROWS, RETURNS)


def prompt_for(question: str) -> tuple[str, str]:
    """The two messages the stitcher renders: the system prompt, and the sections with the request last."""
    sections = "\n".join(CONTEXT)
    return (
        SYSTEM,
        f"<store>\n{HOURS}\n</store>\n\n<inventory>\n{sections}\n</inventory>\n\n<request>\n{question}\n</request>",
    )


def junk(answer: str, question: str = STOCK_QUESTION, context: Sequence[str] = CONTEXT) -> JunkFinding | None:
    return find_junk(answer, question, context, prompt_for(question))


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        ("", EMPTY),
        ("   \n\t ", EMPTY),
        ("...", EMPTY),
        ("?!", EMPTY),
        ("— …", EMPTY),
        ("<eos>", EMPTY),
        ("<start_of_turn><end_of_turn>", EMPTY),
        ("**", EMPTY),
        ("the the the the the the the the", REPETITION),
        ("<tag> <tags> <tags> <tags> …", REPETITION),
        ("Answer: Answer: Answer:", REPETITION),
        ("in stock in stock in stock in stock", REPETITION),
        ("The jacket is in stock. The jacket is in stock. The jacket is in stock.", REPETITION),
        ("The jacket is here. Size M is free. The jacket is here. Ask at the till. The jacket is here.", REPETITION),
        ("I'll check with a colleague. I'll check with a colleague. I'll check with a colleague.", REPETITION),
        (" ".join(["we have the waxed field jacket in olive"] * 3), REPETITION),
        ("<request> Is the waxed field jacket in stock at this store? </request>", ECHOED_MARKUP),
        ("<start_of_turn>model", ECHOED_MARKUP),
        ("<start_of_turn>model\nYes, we have 4 in size M.", ECHOED_MARKUP),
        ("<context>\nSW0014-05 | Waxed field jacket | M / olive | 4\n</context>", ECHOED_MARKUP),
        ('<passage id="kb-returns-2" score="0.812">', ECHOED_MARKUP),
        ("[INST] Is the waxed field jacket in stock? [/INST]", ECHOED_MARKUP),
        ("<|im_start|>assistant\nYes, 4 in M.", ECHOED_MARKUP),
        ("### Question: is the waxed field jacket in stock?", ECHOED_MARKUP),
        ("Question: Is the jacket in stock?\nAnswer: yes", ECHOED_MARKUP),
        ("Context: SW0014-05 M / olive 4", ECHOED_MARKUP),
        ("user: is the waxed field jacket in stock", ECHOED_MARKUP),
        ("Yes, 4 in M.\nassistant: anything else?", ECHOED_MARKUP),
        ("\u2039request\u203a Is the jacket in stock? \u2039/request\u203a", ECHOED_MARKUP),
        ("Is the waxed field jacket in stock at this store?", ECHOED_PROMPT),
        ("Is the waxed field jacket in stock", ECHOED_PROMPT),
        ("You are the assistant for store staff at a retail chain.", ECHOED_PROMPT),
        ("If they do not say, say you will check with a colleague.", ECHOED_PROMPT),
        ("Hello! How can I help you today?", OFF_TOPIC),
        ("Our loyalty members collect points on every purchase and can redeem them online.", OFF_TOPIC),
    ],
)
def test_a_junk_answer_is_found_with_its_kind(answer: str, kind: str) -> None:
    finding = junk(answer)
    assert finding is not None, f"{answer!r} passed"
    assert finding.kind == kind, finding.detail


@pytest.mark.parametrize(
    "answer",
    [
        "The store is open now, until 21:00 today.",
        "Open today 09:00-21:00.",
        "We are open until 21:00 today and from 10:00 to 18:00 tomorrow, Saturday.",
        "The waxed field jacket is in stock: 4 in M and 2 in XL.",
    ],
)
def test_an_answer_about_something_else_than_the_return_is_off_topic(answer: str) -> None:
    finding = junk(answer, RETURN_QUESTION)
    assert finding is not None and finding.kind == OFF_TOPIC, finding


GOOD = [
    ("Yes, we have 4 in size M.", "Do you have the waxed field jacket in M?", ROWS),
    ("Yes, we have 4 in size M.", STOCK_QUESTION, ROWS),
    ("It's 229.00 USD.", "How much is the waxed field jacket?", ROWS),
    ("229.00 USD", "What does the waxed field jacket cost?", ROWS),
    ("SW0014-05 M / olive: 4", STOCK_QUESTION, ROWS),
    ("SW0014-05 M / olive: 4\nSW0014-07 XL / olive: 2", "Which sizes of the waxed field jacket do you have?", ROWS),
    ("sku | variant | in stock\nSW0014-05 | M / olive | 4\nSW0014-07 | XL / olive | 2", STOCK_QUESTION, ROWS),
    ("Size L is sold out, but we have 2 in XL.", "Do you have the waxed field jacket in L?", ROWS),
    ("Available sizes: S, M, L, XL.", "What sizes does the jacket come in?", ROWS),
    ("Very very popular this season, only 2 left in XL.", "Is the waxed field jacket popular?", ROWS),
    ("4 left.", "How many waxed field jackets in M are left?", ROWS),
    ("The jacket costs 229.00 USD and we have 4 in M.", "How much is the waxed field jacket, and is M there?", ROWS),
    (
        "The waxed field jacket is in stock in M (4 left) and XL (2 left); L is sold out until the next delivery.",
        STOCK_QUESTION,
        ROWS,
    ),
    ("Yes.", "Is the waxed field jacket in stock?", ROWS),
    ("No.", "Do you have the jacket in size L?", ROWS),
    ("Open today 09:00-21:00.", "What are your opening hours today?", (HOURS,)),
    ("We close at 21:00 today.", "What time do you close tonight?", (HOURS,)),
    ("Tomorrow we are open 10:00-18:00.", "Are you open tomorrow?", (HOURS,)),
    ("Mon-Fri 09:00-21:00, Sat 10:00-18:00, Sun closed.", "What are the regular opening hours?", (HOURS,)),
    ("I'll check with a colleague and come back to you.", "Can I reserve the jacket until Saturday?", ROWS),
    ("I will check with a colleague and get back to you.", "Can you order the jacket in XXL?", ROWS),
    ("Sorry, we can't do that without a manager.", "Can you give me 30% off this jacket?", ROWS),
    ("A colleague will help you shortly.", "Can I speak to someone about my order?", ()),
    ("Let me check with a colleague.", "Is there a discount for teachers?", ()),
    (
        "If the purchase cannot be found, we offer store credit at the lowest selling price of the item in the last "
        "30 days.",
        "Can the customer bring the blender back without a receipt?",
        CONTEXT,
    ),
    (
        "Items bought at a sale or clearance price can be returned within 14 days with a receipt.",
        "Can items bought at a sale price be returned within 14 days?",
        CONTEXT,
    ),
    ("The refund goes back to the original payment method.", "How is the refund paid?", CONTEXT),
    ("Card refunds take three to five business days to show on the statement.", "When will I see the refund?", CONTEXT),
    (
        "Customer returned an unused blender without a receipt; offer store credit if the purchase cannot be found.",
        RETURN_QUESTION,
        CONTEXT,
    ),
    ("Unused blender returned without a receipt.", RETURN_QUESTION, CONTEXT),
    ("Only the price actually paid is refunded.", "Does a sale item get the full ticket price back?", CONTEXT),
]


@pytest.mark.parametrize(("answer", "question", "context"), GOOD)
def test_a_good_answer_passes(answer: str, question: str, context: Sequence[str]) -> None:
    assert find_junk(answer, question, context, prompt_for(question)) is None


def test_every_hand_off_phrase_passes_whatever_was_asked() -> None:
    for phrase in HANDOFF_PHRASES:
        assert is_handoff(phrase)
        assert junk(phrase, RETURN_QUESTION, ()) is None, phrase


def test_the_answerers_hold_reply_is_a_hand_off() -> None:
    assert is_handoff(HOLD_REPLY)
    assert junk(HOLD_REPLY, RETURN_QUESTION) is None


def test_a_hand_off_with_a_question_word_added_is_judged_as_an_answer() -> None:
    assert not is_handoff("I'll check with a colleague about the jacket.")
    assert not is_handoff("Yes.")


def test_a_single_character_is_an_empty_answer() -> None:
    finding = junk("4")
    assert finding is not None and finding.kind == EMPTY


def test_a_bare_yes_with_no_context_passes() -> None:
    assert find_junk("Yes.", STOCK_QUESTION) is None


def test_an_answer_quoting_the_context_is_no_echo_even_when_the_question_quoted_it_too() -> None:
    passage = "Items bought at a sale or clearance price can be returned within 14 days with a receipt."
    question = f"The policy says: {passage} Does that apply to the blender?"
    assert find_junk(passage, question, (passage,), (question,)) is None
    finding = find_junk(passage, question, (), (question,))
    assert finding is not None and finding.kind == ECHOED_PROMPT


def test_an_answer_without_context_must_share_a_word_with_the_question() -> None:
    finding = find_junk("It's 229.00 USD.", "How much is the waxed field jacket?")
    assert finding is not None and finding.kind == OFF_TOPIC


def test_a_finding_says_what_was_measured_and_against_what() -> None:
    finding = junk("the the the the the the the the")
    assert finding == JunkFinding(
        REPETITION, "'the' repeats 8 times back to back (junk from 3 copies of a phrase of 1 to 4 words)"
    )
    echoed = junk(STOCK_QUESTION)
    assert echoed is not None and "88%" in echoed.detail and "60%" in echoed.detail  # "waxed field jacket" is context
    off = junk("Open today 09:00-21:00.", RETURN_QUESTION)
    assert off is not None and "50%" in off.detail


def test_a_finding_quotes_at_most_40_characters_of_the_answer() -> None:
    sentence = "Our whole range of waxed jackets and field coats is on the second floor near the lifts"
    finding = junk(". ".join([sentence] * 3))
    assert finding is not None and finding.kind == REPETITION
    longest = max(
        (size for size in range(1, len(sentence.lower()) + 1) if sentence.lower()[:size] in finding.detail),
        default=0,
    )
    assert longest <= MAX_QUOTE_CHARS
    markup = junk("<passage " + "x" * 150 + ">")
    assert markup is not None and markup.kind == ECHOED_MARKUP and len(markup.detail) < 120


@pytest.mark.parametrize("kind", TOKEN_TYPES)
def test_a_pii_token_written_back_is_no_markup(kind: str) -> None:
    token = f"<{kind}_1>"
    assert TOKEN.fullmatch(token)
    question = f"Is the order for {token} ready for pickup?"
    assert find_junk(f"Yes, the order for {token} is ready for pickup at the desk.", question, (), (question,)) is None


def test_a_context_given_as_one_string_is_one_passage() -> None:
    assert find_junk("It's 229.00 USD.", "How much is the waxed field jacket?", ROWS[0]) is None


HOSTILE_PIECES = ("a ", "the ", "<", "<a", "<a ", "a.", "a:", "\n", "#", "<|", "!", ". ", "x", "[INST]", "a'", "é ")


@pytest.mark.parametrize("piece", HOSTILE_PIECES)
def test_an_adversarial_100000_character_input_returns(piece: str) -> None:
    text = (piece * (100_000 // len(piece) + 1))[:100_000]
    for finding in (
        find_junk(text, STOCK_QUESTION, CONTEXT),
        find_junk("Yes, 4 in M.", text, (text,), (text, text)),
        find_junk(text, text, (text,), (text,)),
    ):
        assert finding is None or finding.kind in JUNK_KINDS


@settings(max_examples=200, deadline=None)
@given(answer=st.text(max_size=300), question=st.text(max_size=100), context=st.lists(st.text(max_size=100)))
def test_any_text_gets_a_deterministic_verdict(answer: str, question: str, context: list[str]) -> None:
    first = find_junk(answer, question, context, (question,))
    assert first == find_junk(answer, question, context, (question,))
    assert first is None or first.kind in JUNK_KINDS
