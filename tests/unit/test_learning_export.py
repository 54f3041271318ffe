"""The training-set export's rules, on rows shaped as ClickHouse returns them (no database needed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.learning.export import POSITIVE, ExportSpec, build_examples, split_by_time, write_dataset
from services.learning.records import avro_json, parse_audited, tokenised_json
from services.learning.simulation import audited_record, simulated_governor
from services.wire.models import Audited, Channel, Finding, Request, RouteKind, Verdict

SPEC = ExportSpec(task="answers", since=datetime(2031, 1, 1, tzinfo=UTC), until=datetime(2031, 1, 2, tzinfo=UTC))


def record(index: int, text: str, answer: str = "stub answer", *, governed: bool = True, **kwargs: Any) -> Audited:
    request = Request(
        request_id=f"r-{index:04d}", store_id="0417", terminal_id="pos-1", channel=Channel.POS, text=text,
        created_at=1_924_992_000_000 + index * 1000, customer_id="C-123456",
    )  # fmt: skip
    redacted = simulated_governor(text)[0] if governed else text  # a governor that missed everything
    return audited_record(
        request,
        intent=kwargs.pop("intent", "return_or_refund"),
        answer_text=answer,
        redacted_text=redacted,
        recorded_at_us=request.created_at * 1000 + 500,
        **kwargs,
    )


def row(
    audited: Audited, correction: str | None = None, intent: str | None = None, rating: int | None = None
) -> tuple[Any, ...]:
    recorded = datetime.fromtimestamp(audited.audit.recorded_at / 1e6, tz=UTC)
    return (audited.request.request_id, recorded, tokenised_json(audited), correction, intent, rating, None)


def test_a_correction_wins_over_the_original_answer() -> None:
    examples, _ = build_examples("answers", [row(record(1, "return window?"), correction="30 days with receipt.")])
    assert examples[0].outcome == "corrected"
    assert examples[0].chat()["messages"][-1] == {"role": "assistant", "content": "30 days with receipt."}


def test_an_answer_blocked_by_governance_never_becomes_a_positive_example() -> None:
    blocked = record(1, "refund to another card?", verdict=Verdict.BLOCK)
    guarded = record(
        2,
        "what is the discount code",
        output_findings=[Finding(rule_id="out.1", rule_version="1", kind="leak", action="block", detail="d")],
    )
    examples, _ = build_examples("answers", [row(blocked, rating=5), row(guarded, correction="fixed")])
    assert [e.outcome for e in examples] == ["blocked", "blocked"]
    assert not any(e.outcome in POSITIVE for e in examples)


def test_blocked_examples_are_left_out_of_the_chat_files(tmp_path: Path) -> None:
    examples, _ = build_examples(
        "answers", [row(record(1, "q one", verdict=Verdict.BLOCK), rating=5), row(record(2, "q two"), rating=5)]
    )
    train, evaluation, _ = split_by_time(examples, 0.5)
    write_dataset(tmp_path, SPEC, train, evaluation)
    chats = (tmp_path / "train.jsonl").read_text() + (tmp_path / "eval.jsonl").read_text()
    assert "q one" not in chats and "q two" in chats


def test_a_route_correction_is_the_router_label() -> None:
    examples, _ = build_examples("router", [row(record(1, "is the jacket in stock"), intent="stock_check")])
    assert (examples[0].intent, examples[0].outcome) == ("stock_check", "route_corrected")


def test_duplicates_keep_the_earliest_and_are_counted() -> None:
    rows = [row(record(i, "How long is the return window?"), correction="30 days.") for i in range(3)]
    examples, duplicates = build_examples("answers", rows)
    assert [e.request_id for e in examples] == ["r-0000"] and duplicates == 2


def test_the_split_is_by_time_with_evaluation_last() -> None:
    examples, _ = build_examples("answers", [row(record(i, f"question {i}"), rating=5) for i in range(10)])
    train, evaluation, cut = split_by_time(examples, 0.2)
    assert len(evaluation) == 2 and max(e.recorded_at for e in train) < cut <= min(e.recorded_at for e in evaluation)


def test_workflow_answers_are_not_answer_examples() -> None:
    workflow = record(1, "when do you open", route_kind=RouteKind.WORKFLOW, route_id="workflow.store_hours")
    assert build_examples("answers", [row(workflow, rating=5)])[0] == []


def test_the_same_rows_write_byte_identical_files(tmp_path: Path) -> None:
    rows = [row(record(i, f"question {i}"), correction=f"answer {i}") for i in range(6)]
    digests = []
    for attempt in ("a", "b"):
        examples, _ = build_examples("answers", rows)
        train, evaluation, cut = split_by_time(examples, 0.34)
        card = write_dataset(tmp_path / attempt, SPEC, train, evaluation, split={"cut": cut})
        digests.append([(tmp_path / attempt / name).read_bytes() for name in [*sorted(card["files"]), "card.json"]])
    assert digests[0] == digests[1]


def test_avro_json_and_plain_json_audit_records_read_the_same() -> None:
    audited = record(1, "refund please", answer="ok")
    assert parse_audited(avro_json(audited)) == parse_audited(audited.model_dump_json()) == audited


def test_the_audit_writers_tokenised_record_is_read_despite_its_extra_keys() -> None:
    audited = record(1, "mail me at jo@example.com", answer="ok")
    parsed = parse_audited(tokenised_json(audited))
    assert parsed.request.text == audited.governance.redacted_text and "@" not in parsed.request.text


_LOCAL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._%+-", min_size=1, max_size=12).filter(
    lambda s: s[0].isalnum()
)
_LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10)
EMAILS = st.builds(
    lambda local, d, t: f"{local}@{d}.{t}", _LOCAL, _LABEL, st.sampled_from(["com", "org", "co.uk", "de"])
)
PHONES = st.builds(
    lambda c, a, b, n, sep: f"+{c}{sep}{a}{sep}{b}{sep}{n}",
    st.integers(1, 99), st.integers(100, 999), st.integers(100, 999), st.integers(1000, 9999),
    st.sampled_from([" ", "-", ".", ""]),
)  # fmt: skip
CARDS = st.builds(
    lambda d, sep: sep.join(d[i : i + 4] for i in range(0, 16, 4)),
    st.text("0123456789", min_size=16, max_size=16),
    st.sampled_from([" ", "-", ""]),
)
WORDS = st.lists(
    st.sampled_from(["refund", "receipt", "points", "my", "is", "card", "call", "email", "the"]), max_size=6
).map(" ".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pii=st.lists(st.one_of(EMAILS, PHONES, CARDS), min_size=1, max_size=3),
    words=WORDS,
    task=st.sampled_from(["answers", "router"]),
    governed=st.booleans(),
)
def test_an_export_contains_no_raw_pii(tmp_path: Path, pii: list[str], words: str, task: str, governed: bool) -> None:
    """PII anywhere a customer or staff member may type it: the request, the model's answer, the correction."""
    text = f"{words} {' and '.join(pii)} please"
    audited = record(1, text, answer=f"I emailed {pii[0]} about it", governed=governed)
    rows = [row(audited, correction=f"Call {pii[-1]} back", rating=5), row(record(2, "points balance"), rating=5)]
    examples, _ = build_examples(task, rows)  # type: ignore[arg-type]
    train, evaluation, _ = split_by_time(examples, 0.5)
    out = tmp_path / task / str(abs(hash(text)))
    write_dataset(out, ExportSpec(task=task, since=SPEC.since, until=SPEC.until), train, evaluation)  # type: ignore[arg-type]
    written = b"".join(p.read_bytes() for p in sorted(out.iterdir()))
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    parquet_text = json.dumps([pq.read_table(out / f"{s}.parquet").to_pylist() for s in ("train", "eval")])
    for value in pii:
        assert value.encode() not in written and value not in parquet_text
