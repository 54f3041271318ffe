"""The intents the router tells apart: the labelled set, the route table, feedback and training all name these."""

from __future__ import annotations

from typing import Final

INTENTS: Final = (
    "store_hours",
    "stock_check",
    "price_check",
    "discount_request",
    "return_or_refund",
    "order_status",
    "loyalty_account",
    "product_question",
    "complaint",
    "small_talk_other",
)
