"""`switchyard export-training`: a versioned training set from production, selected from ClickHouse.

For a time range and a task (`router`: request text -> intent; `answers`: prompt as sent -> answer) it reads each
audited request in the exact state it was answered in (the prompt with PII still tokenised, the retrieved context,
the route, the model and its version, the answer) with its feedback, and writes:

    train.jsonl / eval.jsonl      positive examples in the chat format fine-tuning tools read: {"messages": [...]}
    train.parquet / eval.parquet  every example with its outcome and metadata (negatives and blocked included)
    card.json                     counts per intent and outcome, time range, the query, a content hash

Rules: a correction wins over the original answer; an answer blocked or held by governance or replaced by the
output guard is never a positive example; a route correction wins over the router's intent; duplicates (same
input, same target) keep the earliest; the split is by time (the latest `eval_fraction` is evaluation). The same
range over the same data gives byte-identical files.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from services.answerer.stage import prompt_for
from services.infra.clickhouse import get_client
from services.learning.pii import scrub
from services.learning.records import canonical_json, content_hash, feedback_by_request, parse_audited
from services.settings import Settings
from services.shared.intents import INTENTS
from services.wire.models import Audited, Governed, RouteKind, Verdict

Task = Literal["router", "answers"]
FORMAT: Final = "switchyard.training-set/1"
ROUTER_SYSTEM_PROMPT: Final = "Classify the retail request into one of: " + ", ".join(INTENTS) + "."
POSITIVE: Final = frozenset({"corrected", "approved", "route_corrected", "confirmed"})
_BLOCKING_ACTIONS: Final = frozenset({"block", "replace", "escalate"})

EXPORT_QUERY: Final = f"""\
WITH fb AS
(
{feedback_by_request(" WHERE created_at < {feedback_until:DateTime64(3, 'UTC')}")}
)
SELECT a.request_id, a.recorded_at, a.record, fb.correction, fb.corrected_intent, fb.rating, fb.escalation_outcome
FROM switchyard.audit_records AS a FINAL
LEFT JOIN fb ON fb.request_id = a.request_id AND fb.store_id = a.store_id
WHERE a.recorded_at >= {{since:DateTime64(3, 'UTC')}} AND a.recorded_at < {{until:DateTime64(3, 'UTC')}}
ORDER BY a.recorded_at, a.request_id
SETTINGS join_use_nulls = 1"""


@dataclass(frozen=True)
class ExportSpec:
    task: Task
    since: datetime
    until: datetime
    feedback_until: datetime | None = None  # feedback given before this counts; default: `until`
    eval_fraction: float = 0.2
    include_unreviewed: bool = False  # answers nobody reviewed become positives (distillation from the large model)


@dataclass(frozen=True)
class FeedbackState:
    correction: str | None = None
    corrected_intent: str | None = None
    rating: int | None = None
    escalation_outcome: str | None = None


@dataclass
class Example:
    example_id: str
    request_id: str
    recorded_at: str
    store_id: str
    intent: str  # the label: the corrected intent where there is one
    routed_intent: str
    route: str
    route_kind: str
    route_table_version: str
    provider: str
    model: str
    model_version: str
    verdict: str
    prompt_hash: str
    messages: list[dict[str, str]]  # the prompt as sent, PII tokenised
    context: list[dict[str, str]]
    answer: str
    target: str
    outcome: str
    rating: int | None
    split: str = ""
    pii_scrubbed: int = 0
    dedup_key: str = field(default="", repr=False)

    def chat(self) -> dict[str, Any]:
        return {"messages": [*self.messages, {"role": "assistant", "content": self.target}]}


@dataclass
class ExportResult:
    out: Path
    card: dict[str, Any]
    train: list[Example]
    eval: list[Example]


def fetch_rows(settings: Settings | None, spec: ExportSpec) -> list[tuple[Any, ...]]:
    client = get_client(settings)
    try:
        result = client.query(EXPORT_QUERY, parameters=_parameters(spec))
        return [tuple(row) for row in result.result_rows]
    finally:
        client.close()


def _parameters(spec: ExportSpec) -> dict[str, datetime]:
    return {"since": spec.since, "until": spec.until, "feedback_until": spec.feedback_until or spec.until}


def example_from_row(task: Task, row: Sequence[Any]) -> Example | None:
    """One row of EXPORT_QUERY as an example of `task`, or None where the request says nothing about the task."""
    request_id, _, record_json, correction, corrected_intent, rating, escalation = row
    audited = parse_audited(record_json, request_id)
    state = FeedbackState(correction, corrected_intent, rating, escalation)
    if task == "router":
        return _router_example(audited, state)
    return _answer_example(audited, state)


def _answer_example(audited: Audited, state: FeedbackState) -> Example | None:
    if audited.route.kind == RouteKind.WORKFLOW or audited.answer.provider in ("workflow", "governance"):
        return None  # no model answered: nothing to learn about answering
    outcome, target = _answer_outcome(audited, state)
    return _example(audited, state, _prompt_as_sent(audited), target, outcome, audited.route.intent)


def _answer_outcome(audited: Audited, state: FeedbackState) -> tuple[str, str]:
    if _blocked(audited):
        return "blocked", audited.answer.text
    if state.correction:
        return "corrected", state.correction
    if (state.rating is not None and state.rating >= 4) or state.escalation_outcome == "approved":
        return "approved", audited.answer.text
    if (state.rating is not None and state.rating <= 2) or state.escalation_outcome == "rejected":
        return "rejected", audited.answer.text
    return "unreviewed", audited.answer.text


def _blocked(audited: Audited) -> bool:
    if audited.governance.verdict in (Verdict.BLOCK, Verdict.ESCALATE):
        return True
    return any(finding.action in _BLOCKING_ACTIONS for finding in audited.answer.output_findings)


def _router_example(audited: Audited, state: FeedbackState) -> Example | None:
    text = audited.governance.redacted_text
    messages = [{"role": "system", "content": ROUTER_SYSTEM_PROMPT}, {"role": "user", "content": text}]
    if state.corrected_intent:
        return _example(audited, state, messages, state.corrected_intent, "route_corrected", state.corrected_intent)
    confirmed = (state.rating is not None and state.rating >= 4) or state.escalation_outcome == "approved"
    outcome = "confirmed" if confirmed or state.correction else "unreviewed"
    if audited.route.intent not in INTENTS:
        return None
    return _example(audited, state, messages, audited.route.intent, outcome, audited.route.intent)


def _prompt_as_sent(audited: Audited) -> list[dict[str, str]]:
    """What the answerer sends, before restoring any PII token: the governor's redacted prompt, or the answerer's
    own template over the redacted text where the governor recorded none."""
    governed = Governed.model_validate(
        audited.model_dump(include={"request", "route", "context", "governance", "timings"})
    )
    return [{"role": m["role"], "content": m["content"]} for m in prompt_for(governed)]


def _example(
    audited: Audited,
    state: FeedbackState,
    messages: list[dict[str, str]],
    target: str,
    outcome: str,
    intent: str,
) -> Example:
    scrubbed = 0

    def clean(text: str) -> str:
        nonlocal scrubbed
        text, count = scrub(text)
        scrubbed += count
        return text

    messages = [{"role": m["role"], "content": clean(m["content"])} for m in messages]
    context = [
        {"source": i.source, "source_id": clean(i.source_id), "version": i.version, "text": clean(i.text)}
        for i in audited.context.items
    ]
    target, answer = clean(target), clean(audited.answer.text)
    user = " ".join(m["content"] for m in messages if m["role"] == "user")
    return Example(
        example_id=content_hash("example", audited.request.request_id)[:24],
        request_id=audited.request.request_id,
        recorded_at=datetime.fromtimestamp(audited.audit.recorded_at / 1e6, tz=UTC).isoformat(timespec="microseconds"),
        store_id=audited.request.store_id,
        intent=intent,
        routed_intent=audited.route.intent,
        route=audited.route.route_id,
        route_kind=audited.route.kind.value,
        route_table_version=audited.route.route_table_version,
        provider=audited.answer.provider,
        model=audited.answer.model,
        model_version=audited.answer.model_version,
        verdict=audited.governance.verdict.value,
        prompt_hash=audited.answer.prompt_hash,
        messages=messages,
        context=context,
        answer=answer,
        target=target,
        outcome=outcome,
        rating=state.rating,
        pii_scrubbed=scrubbed,
        dedup_key=content_hash(" ".join(user.lower().split()), " ".join(target.lower().split())),
    )


def build_examples(task: Task, rows: Sequence[Sequence[Any]]) -> tuple[list[Example], int]:
    """Examples in time order, deduplicated (the earliest of each input and target kept); and how many were
    dropped as duplicates."""
    seen: set[str] = set()
    examples: list[Example] = []
    duplicates = 0
    for row in rows:
        example = example_from_row(task, row)
        if example is None:
            continue
        if example.dedup_key in seen:
            duplicates += 1
            continue
        seen.add(example.dedup_key)
        examples.append(example)
    return examples, duplicates


def split_by_time(examples: list[Example], eval_fraction: float) -> tuple[list[Example], list[Example], str]:
    """The latest `eval_fraction` of examples (by audit time) is evaluation; returns the cut time too. Examples at
    the cut's exact timestamp all go to evaluation, so no moment is in both."""
    if not examples:
        return [], [], ""
    ordered = sorted(examples, key=lambda e: (e.recorded_at, e.request_id))
    cut_index = min(len(ordered) - 1, int(len(ordered) * (1 - eval_fraction)))
    cut = ordered[cut_index].recorded_at
    train = [e for e in ordered if e.recorded_at < cut]
    evaluation = [e for e in ordered if e.recorded_at >= cut]
    for example in train:
        example.split = "train"
    for example in evaluation:
        example.split = "eval"
    return train, evaluation, cut


def _is_positive(example: Example, include_unreviewed: bool) -> bool:
    return example.outcome in POSITIVE or (include_unreviewed and example.outcome == "unreviewed")


_PARQUET_SCHEMA: Final = pa.schema(
    [
        ("example_id", pa.string()), ("request_id", pa.string()), ("recorded_at", pa.string()),
        ("store_id", pa.string()), ("intent", pa.string()), ("routed_intent", pa.string()), ("route", pa.string()),
        ("route_kind", pa.string()), ("route_table_version", pa.string()), ("provider", pa.string()),
        ("model", pa.string()), ("model_version", pa.string()), ("verdict", pa.string()),
        ("prompt_hash", pa.string()), ("messages", pa.string()), ("context", pa.string()), ("answer", pa.string()),
        ("target", pa.string()), ("outcome", pa.string()), ("rating", pa.int8()), ("split", pa.string()),
        ("positive", pa.bool_()), ("pii_scrubbed", pa.int32()),
    ]
)  # fmt: skip


def _parquet_rows(examples: list[Example], include_unreviewed: bool) -> list[dict[str, Any]]:
    rows = []
    for example in examples:
        row = asdict(example)
        row.pop("dedup_key")
        row["messages"] = canonical_json(example.messages)
        row["context"] = canonical_json(example.context)
        row["positive"] = _is_positive(example, include_unreviewed)
        rows.append(row)
    return rows


def write_dataset(
    out: Path, spec: ExportSpec, train: list[Example], evaluation: list[Example], **card_extra: Any
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    digest_parts: list[str] = []
    for name, examples in (("train", train), ("eval", evaluation)):
        lines = [canonical_json(e.chat()) for e in examples if _is_positive(e, spec.include_unreviewed)]
        text = "".join(line + "\n" for line in lines)
        (out / f"{name}.jsonl").write_text(text, encoding="utf-8")
        table = pa.Table.from_pylist(_parquet_rows(examples, spec.include_unreviewed), schema=_PARQUET_SCHEMA)
        pq.write_table(table, out / f"{name}.parquet", compression="zstd")
        digest_parts += [name, text, canonical_json(_parquet_rows(examples, spec.include_unreviewed))]
    digest = content_hash(*digest_parts)
    card = _card(spec, train, evaluation, digest, **card_extra)
    (out / "card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False, sort_keys=True) + "\n", "utf-8")
    return card


def _card(
    spec: ExportSpec, train: list[Example], evaluation: list[Example], digest: str, **extra: Any
) -> dict[str, Any]:
    everything = train + evaluation

    def counts(examples: list[Example]) -> dict[str, Any]:
        return {
            "examples": len(examples),
            "positives": sum(_is_positive(e, spec.include_unreviewed) for e in examples),
            "per_intent": dict(sorted(Counter(e.intent for e in examples).items())),
            "per_outcome": dict(sorted(Counter(e.outcome for e in examples).items())),
            "per_intent_outcome": {
                f"{i}/{o}": n for (i, o), n in sorted(Counter((e.intent, e.outcome) for e in examples).items())
            },
        }

    parameters = {key: value.isoformat() for key, value in _parameters(spec).items()}
    times = sorted(e.recorded_at for e in everything)
    return {
        "format": FORMAT,
        "version": f"{spec.task}-{digest[:12]}",
        "task": spec.task,
        "content_sha256": digest,
        "range": {"since": spec.since.isoformat(), "until": spec.until.isoformat(), **parameters},
        "examples_time_range": {"first": times[0] if times else None, "last": times[-1] if times else None},
        "split": {"by": "time", "eval_fraction": spec.eval_fraction, **extra.pop("split", {})},
        "rules": [
            "a correction wins over the original answer",
            "answers blocked or held by governance, or acted on by the output guard, are never positive",
            "a route correction wins over the router's intent",
            "duplicates (same input and target) keep the earliest",
            "residual e-mails, phone and card numbers are replaced before writing",
        ],
        "include_unreviewed": spec.include_unreviewed,
        "query": EXPORT_QUERY,
        "counts": {"all": counts(everything), "train": counts(train), "eval": counts(evaluation)},
        "pii_spans_scrubbed": sum(e.pii_scrubbed for e in everything),
        "files": ["train.jsonl", "eval.jsonl", "train.parquet", "eval.parquet"],
        **extra,
    }


def export_training(spec: ExportSpec, out: Path, settings: Settings | None = None) -> ExportResult:
    rows = fetch_rows(settings, spec)
    examples, duplicates = build_examples(spec.task, rows)
    train, evaluation, cut = split_by_time(examples, spec.eval_fraction)
    card = write_dataset(
        out, spec, train, evaluation, split={"cut": cut}, source_rows=len(rows), duplicates_dropped=duplicates
    )
    return ExportResult(out, card, train, evaluation)


def load_examples(directory: Path, split: str) -> list[dict[str, Any]]:
    """Every example of a split (positives and negatives) from its Parquet file, as dicts."""
    rows: list[dict[str, Any]] = pq.read_table(directory / f"{split}.parquet").to_pylist()
    for row in rows:
        row["messages"] = json.loads(row["messages"])
        row["context"] = json.loads(row["context"])
    return rows


def _utc(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task", choices=("router", "answers"), required=True, help="the intent classifier's set, or the answers'"
    )
    parser.add_argument("--since", type=_utc, required=True, help="ISO time, UTC unless it says otherwise")
    parser.add_argument("--until", type=_utc, required=True, help="end of the range (exclusive)")
    parser.add_argument("--feedback-until", type=_utc, help="count feedback given before this (default: --until)")
    parser.add_argument("--eval-fraction", type=float, default=0.2, help="latest share that is evaluation")
    parser.add_argument("--include-unreviewed", action="store_true", help="unreviewed answers become positives")
    parser.add_argument("--out", type=Path, required=True, help="directory to write the data set to")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard export-training", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    spec = ExportSpec(
        task=args.task,
        since=args.since,
        until=args.until,
        feedback_until=args.feedback_until,
        eval_fraction=args.eval_fraction,
        include_unreviewed=args.include_unreviewed,
    )
    result = export_training(spec, args.out)
    counts = result.card["counts"]
    print(
        f"{result.card['version']} -> {args.out}: {counts['train']['examples']} train / "
        f"{counts['eval']['examples']} eval examples ({counts['all']['positives']} positive), "
        f"{result.card['duplicates_dropped']} duplicates dropped, sha256 {result.card['content_sha256'][:16]}"
    )
    return 0
