"""First routing logic: a few keyword intents, each with a fixed route. The trained intent classifier and
the declarative, health-aware route table replace this in the routing issue; the record shape stays."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from services.runtime.models import Request, RouteDecision, RouteKind
from services.runtime.stage import Stage

ROUTE_TABLE_VERSION = "builtin-1"


@dataclass(frozen=True)
class Route:
    route_id: str
    kind: RouteKind
    provider: str | None
    fallbacks: tuple[str, ...] = ()


WORKFLOW_STORE_HOURS = Route("workflow.store_hours", RouteKind.WORKFLOW, None)
MODEL_GENERAL = Route("model.general", RouteKind.SMALL_MODEL, "default", ("workflow.escalate",))

INTENT_PATTERNS: list[tuple[str, re.Pattern[str], Route]] = [
    (
        "store_hours",
        re.compile(r"\b(open|opens|opening|close|closes|closing|hours)\b", re.IGNORECASE),
        WORKFLOW_STORE_HOURS,
    ),
    ("stock_check", re.compile(r"\b(in stock|stock|available|availability)\b", re.IGNORECASE), MODEL_GENERAL),
    ("discount_request", re.compile(r"\b(discount|% off|percent off|coupon)\b", re.IGNORECASE), MODEL_GENERAL),
    ("return_or_refund", re.compile(r"\b(return|refund|exchange)\b", re.IGNORECASE), MODEL_GENERAL),
]


def route_request(request: Request) -> RouteDecision:
    """The first intent whose pattern matches wins; anything else is a general model question."""
    for intent, pattern, route in INTENT_PATTERNS:
        match = pattern.search(request.text)
        if match:
            return _decision(route, intent, 0.9, f"matched {match.group(0)!r} for intent {intent}")
    return _decision(MODEL_GENERAL, "other", 0.5, "no intent pattern matched; general model route")


def _decision(route: Route, intent: str, confidence: float, reason: str) -> RouteDecision:
    return RouteDecision(
        route_id=route.route_id,
        kind=route.kind,
        intent=intent,
        confidence=confidence,
        provider=route.provider,
        fallbacks=list(route.fallbacks),
        reason=reason,
        route_table_version=ROUTE_TABLE_VERSION,
    )


class Router(Stage[Request, RouteDecision]):
    name: ClassVar[str] = "router"
    input_topic: ClassVar[str] = "requests"
    input_record: ClassVar[str] = "Request"
    input_model = Request
    output_topic: ClassVar[str] = "routed"
    output_record: ClassVar[str] = "Routed"
    section: ClassVar[str] = "route"

    async def decide(self, record: Request) -> RouteDecision:
        return route_request(record)
