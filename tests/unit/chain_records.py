"""Valid chain records for tests, built once here so every test uses the same shapes."""

from __future__ import annotations

from services.wire.models import (
    Answer,
    Answered,
    Channel,
    Context,
    ContextItem,
    Governance,
    Request,
    RouteDecision,
    RouteKind,
    StageTiming,
    Verdict,
)


def answered(request_id: str, store_id: str = "0417") -> Answered:
    return Answered(
        request=Request(
            request_id=request_id, store_id=store_id, terminal_id="pos-1", channel=Channel.POS, text="hi", created_at=1
        ),
        route=RouteDecision(
            route_id="model.general",
            kind=RouteKind.SMALL_MODEL,
            intent="other",
            confidence=0.5,
            provider="default",
            reason="test",
            route_table_version="t",
        ),
        context=Context(
            items=[ContextItem(source="store_hours", source_id=store_id, version="1", score=None, text="open")],
            token_count=1,
            token_budget=10,
        ),
        governance=Governance(verdict=Verdict.ALLOW, findings=[], redacted_text="hi"),
        answer=Answer(
            text="hello",
            provider="stub",
            model="m",
            model_version="1",
            prompt_template_version="p",
            prompt_hash="h",
            tokens_in=3,
            tokens_out=2,
            cost_usd=0.0,
            latency_ms=50.0,
        ),
        timings=[StageTiming(stage=s, received_at=10, started_at=11, finished_at=12) for s in ["router", "answerer"]],
    )
