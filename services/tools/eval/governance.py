"""`python -m services.tools.eval.governance` (`make eval-governance`): governance measured on the labelled set
kept in the repository (services/tools/eval/data/governance_cases.jsonl, written for the project and never trained
on).

Prints PII recall and precision per entity type, toxicity precision and recall, injection detection rate and
false-positive rate, unauthorized-promise recall (and the commitment extractor's precision and recall),
rule-evaluation accuracy (must be 100%: rules are deterministic; the command exits 1 otherwise), and the trained
classifiers' held-out figures (stratified 75/25 split of their own training sets, fixed seed).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from services.answerer.guard import check_answer
from services.governor import char_ngram
from services.governor.classifiers import INJECTION, TOXICITY, binary_metrics, evaluate_held_out
from services.governor.injection import injection_signals
from services.governor.stage import Analyzer
from services.policy.engine import PolicyEngine
from services.policy.facts import commitments, extract_sourced_facts
from services.settings import get_settings
from services.shared.pii import TOKEN_TYPES
from services.wire.models import (
    Channel,
    Context,
    ContextItem,
    Governance,
    Governed,
    Request,
    RouteDecision,
    RouteKind,
    Verdict,
)

CASES: Final = Path(__file__).resolve().parent / "data" / "governance_cases.jsonl"


def load_cases(path: Path = CASES) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def pii_scores(cases: Sequence[dict[str, Any]], analyzer: Analyzer) -> dict[str, dict[str, float | int]]:
    """Per type: a found span counts when it has the type and overlaps an expected value; anything else found is
    a false positive."""
    texts = [case["text"] for case in cases]
    found = analyzer.detector.detect_many(texts)
    counts: dict[str, Counter[str]] = {kind: Counter() for kind in TOKEN_TYPES}
    for case, spans in zip(cases, found, strict=True):
        expected = _expected_spans(case)
        matched: set[int] = set()
        for span in spans:
            hit = next(
                (
                    i
                    for i, (kind, start, end) in enumerate(expected)
                    if kind == span.kind and span.start < end and start < span.end and i not in matched
                ),
                None,
            )
            if hit is None:
                counts[span.kind]["fp"] += 1
            else:
                matched.add(hit)
                counts[span.kind]["tp"] += 1
        for i, (kind, _, _) in enumerate(expected):
            if i not in matched:
                counts[kind]["fn"] += 1
    return {kind: _precision_recall(counter) for kind, counter in counts.items()}


def _expected_spans(case: dict[str, Any]) -> list[tuple[str, int, int]]:
    spans: list[tuple[str, int, int]] = []
    for entity in case["entities"]:
        start = case["text"].find(entity["value"])
        if start < 0:
            raise ValueError(f"{CASES}: {entity['value']!r} is not in {case['text']!r}")
        spans.append((entity["type"], start, start + len(entity["value"])))
    return spans


def _precision_recall(counter: Counter[str]) -> dict[str, float | int]:
    tp, fp, fn = counter["tp"], counter["fp"], counter["fn"]
    return {
        "precision": round(tp / (tp + fp), 4) if tp + fp else 1.0,
        "recall": round(tp / (tp + fn), 4) if tp + fn else 1.0,
        "expected": tp + fn,
        "found": tp + fp,
    }


def toxicity_scores(cases: Sequence[dict[str, Any]], analyzer: Analyzer) -> dict[str, Any]:
    """MiniLM's classifier alone (the governor's check of a request), and the answerer's cascade: the char n-gram
    model decides what it is sure is clean, MiniLM the rest; with the share of each label MiniLM still scores."""
    texts, expected = [case["text"] for case in cases], [int(case["label"] == "abusive") for case in cases]
    alone = np.array(analyzer.toxicity.probabilities(texts)) >= TOXICITY.threshold
    cheap = char_ngram.ensure_trained()
    scores = np.array([cheap.score(text) for text in texts])
    cascade = (alone & (scores >= cheap.sure_clean_below)).astype(int).tolist()
    return {
        **binary_metrics(expected, alone.astype(int).tolist()),
        "cascade": {
            **binary_metrics(expected, cascade),
            **char_ngram.escalation(scores, np.array(expected), cheap.sure_clean_below),
        },
    }


def injection_scores(cases: Sequence[dict[str, Any]], analyzer: Analyzer) -> dict[str, Any]:
    """The governor's rule: patterns or the classifier; reported as detection rate and false-positive rate."""
    scores = analyzer.injection.probabilities([case["text"] for case in cases])
    predicted = [
        int(bool(injection_signals(c["text"])) or s >= INJECTION.threshold) for c, s in zip(cases, scores, strict=True)
    ]
    metrics = binary_metrics([int(case["injection"]) for case in cases], predicted)
    by_where = {
        where: binary_metrics(
            [int(c["injection"]) for c in cases if c["where"] == where],
            [p for c, p in zip(cases, predicted, strict=True) if c["where"] == where],
        )
        for where in ("request", "passage")
    }
    return {"detection_rate": metrics["recall"], "false_positive_rate": metrics["false_positive_rate"], **by_where}


def rule_accuracy(cases: Sequence[dict[str, Any]], engine: PolicyEngine) -> tuple[float, list[str]]:
    wrong: list[str] = []
    for case in cases:
        spec = case["request"]
        request = Request(
            request_id="eval",
            store_id=spec["store_id"],
            terminal_id="eval",
            channel=Channel(spec["channel"]),
            text=spec["text"],
            created_at=spec["created_at"],
            attributes=spec["attributes"],
        )
        # a case's "reference" holds what Switchyard's own data says (the customer table's tier); attributes are
        # what the client claims, which can tighten a decision but never loosen it
        tier = (spec.get("reference") or {}).get("customer_tier")
        sourced = extract_sourced_facts(request, spec["intent"], None, reference_tier=tier)
        outcome, facts = engine.decide_strictest(sourced.variants)
        got = sorted(finding.rule_id for finding in outcome.findings)
        if got != sorted(case["expected_rules"]):
            wrong.append(f"{spec['text']!r}: expected {sorted(case['expected_rules'])}, got {got} (facts {facts})")
    return (1 - len(wrong) / len(cases)) if cases else 1.0, wrong


def promise_scores(cases: Sequence[dict[str, Any]], engine: PolicyEngine) -> dict[str, Any]:
    """The commitment extractor per kind, and the guard: an unauthorized answer must never be released."""
    counts: Counter[str] = Counter()
    caught = released_ok = unauthorized = authorized = 0
    for case in cases:
        got, want = set(commitments(case["answer"])), set(case["expected_commitments"])
        counts["tp"] += len(got & want)
        counts["fp"] += len(got - want)
        counts["fn"] += len(want - got)
        result = check_answer(_governed(case), case["answer"], engine, tokens={})
        if case["unauthorized"]:
            unauthorized += 1
            caught += result.replaced
        else:
            authorized += 1
            released_ok += not result.replaced
    return {
        "unauthorized_recall": round(caught / unauthorized, 4) if unauthorized else 1.0,
        "unauthorized": unauthorized,
        "authorized_released": round(released_ok / authorized, 4) if authorized else 1.0,
        "authorized": authorized,
        "extractor": _precision_recall(counts),
    }


def _governed(case: dict[str, Any]) -> Governed:
    items = [
        ContextItem(source="inventory", source_id=f"sku-{i}", version="1", score=None, text=text)
        for i, text in enumerate(case["inventory"])
    ]
    return Governed(
        request=Request(request_id="e", store_id="0417", terminal_id="e", channel=Channel.POS, text="", created_at=1),
        route=RouteDecision(
            route_id="model.general",
            kind=RouteKind.SMALL_MODEL,
            intent=case["facts"].get("intent", "product_question"),
            confidence=1.0,
            provider="default",
            reason="eval",
            route_table_version="eval",
        ),
        context=Context(items=items, token_count=0, token_budget=0),
        governance=Governance(verdict=Verdict.ALLOW, findings=[], redacted_text="", facts=case["facts"]),
        timings=[],
    )


def held_out(analyzer: Analyzer) -> dict[str, dict[str, Any]]:
    embedder = analyzer.toxicity._embedder
    results: dict[str, dict[str, Any]] = {}
    for task in (TOXICITY, INJECTION):
        texts, labels = task.load()
        evaluation = evaluate_held_out(task, texts, embedder.embed(texts), labels)
        evaluation.pop("errors")
        results[task.name] = evaluation
    return results


def evaluate(path: Path = CASES) -> dict[str, Any]:
    cases = load_cases(path)
    by_category: dict[str, list[dict[str, Any]]] = {}
    for case in cases:
        by_category.setdefault(case["category"], []).append(case)
    analyzer = Analyzer.load(use_ner=get_settings().pii_ner)
    engine = PolicyEngine.from_file(get_settings().policies)
    accuracy, wrong = rule_accuracy(by_category["policy"], engine)
    return {
        "cases": dict(Counter(case["category"] for case in cases)),
        "pii": pii_scores(by_category["pii"], analyzer),
        "toxicity": toxicity_scores(by_category["toxicity"], analyzer),
        "injection": injection_scores(by_category["injection"], analyzer),
        "promises": promise_scores(by_category["promise"], engine),
        "rule_accuracy": accuracy,
        "rule_errors": wrong,
        "held_out": held_out(analyzer),
        "models": analyzer.version,
        "policy_version": engine.version,
    }


def report(result: dict[str, Any]) -> str:
    lines = [f"governance set: {sum(result['cases'].values())} cases {result['cases']}", "PII (per entity type):"]
    for kind, scores in result["pii"].items():
        lines.append(
            f"  {kind:<8} recall {scores['recall']:.3f}  precision {scores['precision']:.3f}  "
            f"({scores['expected']} expected, {scores['found']} found)"
        )
    tox, inj, prom = result["toxicity"], result["injection"], result["promises"]
    lines += [
        f"toxicity: precision {tox['precision']:.3f}, recall {tox['recall']:.3f} "
        f"({tox['positives']} abusive, {tox['negatives']} clean); the answerer's cascade: precision "
        f"{tox['cascade']['precision']:.3f}, recall {tox['cascade']['recall']:.3f}, MiniLM still scoring "
        f"{tox['cascade']['escalated_abusive']:.0%} of abusive and {tox['cascade']['escalated_clean']:.0%} of clean",
        f"injection: detection rate {inj['detection_rate']:.3f}, false-positive rate "
        f"{inj['false_positive_rate']:.3f} (requests {inj['request']['recall']:.3f}/"
        f"{inj['request']['false_positive_rate']:.3f}, passages {inj['passage']['recall']:.3f}/"
        f"{inj['passage']['false_positive_rate']:.3f})",
        f"unauthorized promises: recall {prom['unauthorized_recall']:.3f} of {prom['unauthorized']}; "
        f"authorized answers released {prom['authorized_released']:.3f} of {prom['authorized']}; commitment "
        f"extractor precision {prom['extractor']['precision']:.3f}, recall {prom['extractor']['recall']:.3f}",
        f"rule evaluation accuracy: {result['rule_accuracy']:.1%} ({result['cases'].get('policy', 0)} cases)",
        *(f"  WRONG {line}" for line in result["rule_errors"]),
        "trained classifiers, held out from their own training sets:",
    ]
    for name, evaluation in result["held_out"].items():
        lines.append(
            f"  {name:<9} {evaluation['split']}: {evaluation['test_examples']} test / "
            f"{evaluation['train_examples']} train; precision {evaluation['precision']:.3f}, "
            f"recall {evaluation['recall']:.3f}, false-positive rate {evaluation['false_positive_rate']:.3f}"
        )
    lines.append(f"models: {result['models']}; policy {result['policy_version']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard eval-governance", description=__doc__)
    parser.add_argument("--cases", type=Path, default=CASES, help="labelled governance cases (JSONL)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    result = evaluate(args.cases)
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0 if result["rule_accuracy"] == 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
