"""Prompt templates more than one stage renders: the answerer's fallback template, which the governor redacts
too, and the chat message both hand to a model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

from services.wire.models import ContextItem


class ChatMessage(TypedDict):
    role: str  # "system", "user" or "assistant"
    content: str


SYSTEM_PROMPT = (
    "You are a helpful assistant for store staff at a retail chain. Answer in one or two short sentences, "
    "using only the context given. If the context does not say, say you will check with a colleague."
)


# Context a model route gets; store hours are answered by the workflow route, and a small base model
# given them for an unrelated question tends to repeat them back.
MODEL_CONTEXT_SOURCES = frozenset({"inventory", "knowledge_base", "customer_history"})


def fallback_prompt(items: Sequence[ContextItem], question: str) -> list[ChatMessage]:
    """The answerer's own template where the stitcher rendered no prompt; the governor redacts its output too."""
    shown = [item for item in items if item.source in MODEL_CONTEXT_SOURCES]
    user = (
        question if not shown else "Context:\n" + "\n".join(f"- {i.text}" for i in shown) + f"\n\nQuestion: {question}"
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
