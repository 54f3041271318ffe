"""The token budget: whole items kept by rank until the budget is spent, deterministically, the rest recorded."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.stitcher.budget import EstimatedTokens, fit_to_budget, with_tokens
from services.wire.models import ContextItem


def item(source: str, source_id: str, tokens: int, score: float | None = None) -> ContextItem:
    return ContextItem(source=source, source_id=source_id, version="1", score=score, text="x", tokens=tokens)


def test_an_over_long_context_is_trimmed_to_fit_with_the_dropped_parts_recorded() -> None:
    items = [
        item("store_hours", "0001", 60),
        item("inventory", "0001:SW0014-06", 30, 1.0),
        item("knowledge_base", "p-best", 120, 0.9),
        item("knowledge_base", "p-worse", 120, 0.4),
        item("customer_history", "r-1", 50),
    ]
    kept, dropped = fit_to_budget(items, 250)
    assert [i.source_id for i in kept] == ["0001", "0001:SW0014-06", "p-best"]
    assert sum(i.tokens for i in kept) <= 250
    assert [(d.source_id, d.tokens, d.reason) for d in dropped] == [
        ("p-worse", 120, "over_budget"),
        ("r-1", 50, "over_budget"),
    ]


def test_an_item_that_does_not_fit_is_dropped_whole_and_smaller_ones_fill_the_room() -> None:
    items = [item("knowledge_base", "big", 300, 0.9), item("knowledge_base", "small", 40, 0.5)]
    kept, dropped = fit_to_budget(items, 100)
    assert [i.source_id for i in kept] == ["small"]
    assert [d.source_id for d in dropped] == ["big"]


def test_the_priority_order_decides_which_source_survives() -> None:
    items = [item("knowledge_base", "p", 80, 0.9), item("inventory", "row", 80, 1.0)]
    kept, _ = fit_to_budget(items, 100, priority=("knowledge_base", "inventory"))
    assert [i.source_id for i in kept] == ["p"]
    kept, _ = fit_to_budget(items, 100, priority=("inventory", "knowledge_base"))
    assert [i.source_id for i in kept] == ["row"]


def test_kept_items_keep_their_original_order() -> None:
    items = [item("customer_history", "h", 10), item("store_hours", "s", 10), item("inventory", "i", 10, 1.0)]
    kept, dropped = fit_to_budget(items, 100)
    assert [i.source_id for i in kept] == ["h", "s", "i"] and dropped == []


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["store_hours", "inventory", "knowledge_base", "customer_history", "other"]),
            st.integers(0, 400),
            st.one_of(st.none(), st.floats(0, 1)),
        ),
        max_size=30,
    ),
    st.integers(0, 1500),
)
def test_trimming_is_deterministic_and_never_exceeds_the_budget(
    spec: list[tuple[str, int, float | None]], budget: int
) -> None:
    items = [item(source, f"id-{n}", tokens, score) for n, (source, tokens, score) in enumerate(spec)]
    kept, dropped = fit_to_budget(items, budget)
    assert sum(i.tokens for i in kept) <= budget
    assert len(kept) + len(dropped) == len(items)
    assert (kept, dropped) == fit_to_budget(list(items), budget)
    assert {i.source_id for i in kept} | {d.source_id for d in dropped} == {i.source_id for i in items}


def test_the_estimate_counts_words_and_punctuation() -> None:
    counter = EstimatedTokens()
    assert counter.count("") == 0
    assert counter.count("open until 21:00 today.") == 9  # 5 word pieces x 1.3, rounded up, and 2 marks
    [counted] = with_tokens([item("store_hours", "s", 0)], counter)
    assert counted.tokens == counter.count("x")
