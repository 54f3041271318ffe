"""`python -m services.tools.eval.governance` (`make eval-governance`): governance measured on the labelled set
kept in the repository (services/tools/eval/data/governance_cases.jsonl, written for the project and never trained
on), against the floors committed beside it (governance_floors.json; tests/unit/test_governance_eval.py holds them).

Prints PII recall and precision per entity type (a found span counts only with the expected type and exactly the
expected value; the older overlap rule beside it), toxicity precision and recall, injection detection rate and
false-positive rate, unauthorized-promise recall (and the commitment extractor's precision and recall),
rule-evaluation accuracy (must be 100%: rules are deterministic), the same figures on the cases written apart from
the recognizers (set "new": its dev families may be tuned against, its test families never), and the trained
classifiers' held-out figures with whole families of near-duplicates held out (and the older row split beside
them). Exits 1 when rule accuracy is below 100% or a figure falls below its floor.
"""

from __future__ import annotations

import argparse
import json
import string
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

import numpy as np
from numpy.typing import NDArray

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
FLOORS: Final = CASES.with_name("governance_floors.json")
# a floor sits this far below the figure measured when it was written (a ceiling this far above, for rates of
# false positives): one point, so a real regression fails and rounding does not
FLOOR_MARGIN: Final = 0.01
SUBSETS: Final = ("old", "dev", "test")
_TRIM: Final = string.whitespace + string.punctuation.replace("+", "")
_T = TypeVar("_T")


def load_cases(path: Path = CASES) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


Outcomes = Counter[tuple[str, str]]  # (token type, "tp" | "fp" | "fn") -> count, for one case


def pii_outcomes(cases: Sequence[dict[str, Any]], analyzer: Analyzer) -> dict[str, list[Outcomes]]:
    """Per case and per rule. "exact": a found span is a true positive only when its type is the expected type and
    its text, trimmed of surrounding whitespace and punctuation, equals the expected value; a span that only
    overlaps is one false positive and leaves the value missed. "overlap" (the rule before 2026-12-05): any span of
    the expected type overlapping the value counts."""
    found = analyzer.detector.detect_many([case["text"] for case in cases])
    exact, overlap = [], []
    for case, spans in zip(cases, found, strict=True):
        expected = _expected_spans(case)
        exact.append(_outcomes(expected, [(s.kind, s.start, s.end) for s in spans], _same_value(case["text"])))
        overlap.append(_outcomes(expected, [(s.kind, s.start, s.end) for s in spans], _overlaps))
    return {"exact": exact, "overlap": overlap}


Span = tuple[str, int, int]


def _outcomes(expected: list[Span], spans: list[Span], matches: Callable[[Span, Span], bool]) -> Outcomes:
    counts: Outcomes = Counter()
    matched: set[int] = set()
    for span in spans:
        hit = next((i for i, want in enumerate(expected) if i not in matched and matches(want, span)), None)
        if hit is None:
            counts[span[0], "fp"] += 1
        else:
            matched.add(hit)
            counts[span[0], "tp"] += 1
    for i, (kind, _, _) in enumerate(expected):
        if i not in matched:
            counts[kind, "fn"] += 1
    return counts


def _overlaps(want: Span, span: Span) -> bool:
    return want[0] == span[0] and span[1] < want[2] and want[1] < span[2]


def _same_value(text: str) -> Callable[[Span, Span], bool]:
    def same(want: Span, span: Span) -> bool:
        return want[0] == span[0] and _trimmed(text[want[1] : want[2]]) == _trimmed(text[span[1] : span[2]])

    return same


def _trimmed(value: str) -> str:
    return value.strip(_TRIM)


def pii_scores(outcomes: Sequence[Outcomes]) -> dict[str, dict[str, float | int]]:
    total: Outcomes = sum(outcomes, Counter())
    return {
        kind: _precision_recall(Counter({what: total[kind, what] for what in ("tp", "fp", "fn")}))
        for kind in TOKEN_TYPES
    }


def _expected_spans(case: dict[str, Any]) -> list[Span]:
    spans: list[Span] = []
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


def escalated_requests(texts: Sequence[str], analyzer: Analyzer) -> NDArray[np.bool_]:
    """Per request text, whether the governor's cascade sends it to MiniLM (all of them without a cascade)."""
    cascade = analyzer.cascade
    return np.array([cascade is None or cascade.sure(text) is None for text in texts], dtype=bool)


def toxicity_predictions(cases: Sequence[dict[str, Any]], analyzer: Analyzer) -> dict[str, list[Any]]:
    """The governor's check of a request (its cascade: the cheap models decide what they are sure of, MiniLM the
    rest), MiniLM's classifier alone, and the answerer's cascade (the char n-gram toxicity model alone in front)."""
    texts = [case["text"] for case in cases]
    alone = np.array(analyzer.toxicity.probabilities(texts)) >= TOXICITY.threshold
    escalated = escalated_requests(texts, analyzer)
    cheap = char_ngram.ensure_trained()
    scores = np.array([cheap.score(text) for text in texts])
    return {
        "governor": (alone & escalated).astype(int).tolist(),
        "alone": alone.astype(int).tolist(),
        "escalated": escalated.astype(int).tolist(),
        "cascade": (alone & (scores >= cheap.sure_clean_below)).astype(int).tolist(),
        "cheap_score": scores.tolist(),
    }


def toxicity_scores(cases: Sequence[dict[str, Any]], predicted: dict[str, list[Any]]) -> dict[str, Any]:
    """The governor's figures (with the share of each label its cascade sends to MiniLM, and MiniLM's alone), and the
    answerer's cascade with the share of each label MiniLM still scores."""
    expected = [int(case["label"] == "abusive") for case in cases]
    cheap = char_ngram.ensure_trained()
    escalated = np.array(predicted["escalated"], dtype=bool)
    labels = np.array(expected)
    return {
        **binary_metrics(expected, predicted["governor"]),
        "escalated_abusive": round(float(escalated[labels == 1].mean()), 4),
        "escalated_clean": round(float(escalated[labels == 0].mean()), 4),
        "minilm_alone": binary_metrics(expected, predicted["alone"]),
        "cascade": {
            **binary_metrics(expected, predicted["cascade"]),
            **char_ngram.escalation(np.array(predicted["cheap_score"]), np.array(expected), cheap.sure_clean_below),
        },
    }


def injection_predictions(cases: Sequence[dict[str, Any]], analyzer: Analyzer) -> list[int]:
    """The governor's rule: patterns or the classifier; for a request, the classifier only where the cascade sends
    the text to MiniLM (a passage is scored by MiniLM at ingest)."""
    texts = [case["text"] for case in cases]
    scores = analyzer.injection.probabilities(texts)
    escalated = escalated_requests(texts, analyzer)
    return [
        int(bool(injection_signals(c["text"])) or (s >= INJECTION.threshold and (c["where"] != "request" or up)))
        for c, s, up in zip(cases, scores, escalated, strict=True)
    ]


def injection_scores(cases: Sequence[dict[str, Any]], predicted: Sequence[int]) -> dict[str, Any]:
    """Detection rate and false-positive rate, overall and for requests and passages apart."""
    metrics = binary_metrics([int(case["injection"]) for case in cases], predicted)
    by_where = {
        where: binary_metrics(
            [int(c["injection"]) for c in cases if c["where"] == where],
            [p for c, p in zip(cases, predicted, strict=True) if c["where"] == where],
        )
        for where in ("request", "passage")
    }
    return {
        "detection_rate": metrics["recall"],
        "precision": metrics["precision"],
        "false_positive_rate": metrics["false_positive_rate"],
        **by_where,
    }


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
    """Each trained classifier fitted on part of its own training set and scored on the rest: whole families of
    near-duplicates held out (the figure to trust), and the older row split that let twins sit on both sides."""
    embedder = analyzer.toxicity._embedder
    results: dict[str, dict[str, Any]] = {}
    for task in (TOXICITY, INJECTION):
        texts, labels = task.load()
        embeddings = embedder.embed(texts)
        results[task.name] = {}
        for by in ("family", "row"):
            evaluation = evaluate_held_out(task, texts, embeddings, labels, by=by)
            evaluation.pop("errors")
            results[task.name][by] = evaluation
    return results


def evaluate(path: Path = CASES) -> dict[str, Any]:
    cases = load_cases(path)
    by_category: dict[str, list[dict[str, Any]]] = {}
    for case in cases:
        by_category.setdefault(case["category"], []).append(case)
    analyzer = Analyzer.load(use_ner=get_settings().pii_ner)
    engine = PolicyEngine.from_file(get_settings().policies)
    accuracy, wrong = rule_accuracy(by_category["policy"], engine)
    pii, tox, inj = by_category["pii"], by_category["toxicity"], by_category["injection"]
    pii_found, tox_found, inj_found = (
        pii_outcomes(pii, analyzer),
        toxicity_predictions(tox, analyzer),
        injection_predictions(inj, analyzer),
    )
    subsets = {}
    for subset in SUBSETS:
        keep = [_subset(case) == subset for case in pii], [_subset(case) == subset for case in tox]
        inj_keep = [_subset(case) == subset for case in inj]
        subsets[subset] = {
            "cases": sum(keep[0]) + sum(keep[1]) + sum(inj_keep),
            "pii": pii_scores(_kept(pii_found["exact"], keep[0])),
            "pii_overlap": pii_scores(_kept(pii_found["overlap"], keep[0])),
            "toxicity": binary_metrics(
                [int(c["label"] == "abusive") for c in _kept(tox, keep[1])], _kept(tox_found["governor"], keep[1])
            ),
            "injection": injection_scores(_kept(inj, inj_keep), _kept(inj_found, inj_keep)),
        }
    return {
        "cases": dict(Counter(case["category"] for case in cases)),
        "pii": pii_scores(pii_found["exact"]),
        "pii_overlap": pii_scores(pii_found["overlap"]),
        "toxicity": toxicity_scores(tox, tox_found),
        "injection": injection_scores(inj, inj_found),
        "promises": promise_scores(by_category["promise"], engine),
        "rule_accuracy": accuracy,
        "rule_errors": wrong,
        "subsets": subsets,
        **new_case_outcomes(pii, pii_found["exact"], tox, tox_found["governor"], inj, inj_found),
        "held_out": held_out(analyzer),
        "models": analyzer.version,
        "policy_version": engine.version,
    }


def _subset(case: dict[str, Any]) -> str:
    """ "old" for the cases written with the recognizers; "dev" or "test" for the new ones."""
    return str(case["split"]) if case.get("set") == "new" else "old"


def _kept(items: Sequence[_T], keep: Sequence[bool]) -> list[_T]:
    return [item for item, wanted in zip(items, keep, strict=True) if wanted]


def new_case_outcomes(
    pii: Sequence[dict[str, Any]],
    pii_found: Sequence[Outcomes],
    tox: Sequence[dict[str, Any]],
    tox_found: Sequence[int],
    inj: Sequence[dict[str, Any]],
    inj_found: Sequence[int],
) -> dict[str, Any]:
    """Per format of the new cases, dev and test apart: how many cases came out wholly right (a PII case: every
    value found exactly and nothing else; a toxicity or injection case: the expected verdict), and the failures."""
    formats: dict[str, dict[str, Counter[str]]] = {}
    failures: list[dict[str, str]] = []

    def record(case: dict[str, Any], wrong: str) -> None:
        counts = formats.setdefault(case["format"], {"dev": Counter(), "test": Counter()})[case["split"]]
        counts["cases"] += 1
        counts["passed"] += not wrong
        if wrong:
            failures.append({key: case[key] for key in ("split", "format", "family", "text")} | {"wrong": wrong})

    for case, outcome in zip(pii, pii_found, strict=True):
        if case.get("set") == "new":
            record(case, ", ".join(f"{what} {kind}" for (kind, what), n in sorted(outcome.items()) if what != "tp"))
    for case, flagged in zip(tox, tox_found, strict=True):
        if case.get("set") == "new" and flagged != (case["label"] == "abusive"):
            record(case, "flagged abusive" if flagged else "abuse missed")
        elif case.get("set") == "new":
            record(case, "")
    for case, flagged in zip(inj, inj_found, strict=True):
        if case.get("set") == "new" and flagged != case["injection"]:
            record(case, f"{case['where']} flagged as injection" if flagged else f"{case['where']} injection missed")
        elif case.get("set") == "new":
            record(case, "")
    return {
        "formats": {name: {split: dict(c) for split, c in splits.items()} for name, splits in sorted(formats.items())},
        "failures": failures,
    }


def held_figures(result: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """The figures the floors hold, by dotted path into `result`: (higher is better, lower is better)."""
    higher: dict[str, float] = {"rule_accuracy": result["rule_accuracy"]}
    lower: dict[str, float] = {}
    higher["promises.unauthorized_recall"] = result["promises"]["unauthorized_recall"]
    for prefix, figures in (("", result), ("subsets.test.", result["subsets"]["test"])):
        for kind, scores in figures["pii"].items():
            if scores["expected"] or scores["found"]:
                higher[f"{prefix}pii.{kind}.recall"] = scores["recall"]
                higher[f"{prefix}pii.{kind}.precision"] = scores["precision"]
        for name in ("precision", "recall"):
            higher[f"{prefix}toxicity.{name}"] = figures["toxicity"][name]
        for name in ("precision", "detection_rate"):
            higher[f"{prefix}injection.{name}"] = figures["injection"][name]
        lower[f"{prefix}toxicity.false_positive_rate"] = figures["toxicity"]["false_positive_rate"]
        lower[f"{prefix}injection.false_positive_rate"] = figures["injection"]["false_positive_rate"]
    for task, splits in result["held_out"].items():
        for name in ("precision", "recall"):
            higher[f"held_out.{task}.family.{name}"] = splits["family"][name]
        lower[f"held_out.{task}.family.false_positive_rate"] = splits["family"]["false_positive_rate"]
    return higher, lower


def floors_from(result: dict[str, Any]) -> dict[str, Any]:
    """Floors one point below each figure measured now (ceilings one point above the rates of false positives);
    rule accuracy stays at 1.0."""
    higher, lower = held_figures(result)
    return {
        "written": datetime.now(UTC).date().isoformat(),
        "models": result["models"],
        "margin": FLOOR_MARGIN,
        "floors": {
            path: 1.0 if path == "rule_accuracy" else round(max(0.0, value - FLOOR_MARGIN), 4)
            for path, value in higher.items()
        },
        "ceilings": {path: round(min(1.0, value + FLOOR_MARGIN), 4) for path, value in lower.items()},
    }


def below_floors(result: dict[str, Any], floors: dict[str, Any]) -> list[str]:
    """Each figure under its floor or over its ceiling, and each floor whose figure is no longer measured."""
    higher, lower = held_figures(result)
    problems = [
        f"{path}: {higher[path]:.4f} < floor {floor:.4f}" if path in higher else f"{path}: no longer measured"
        for path, floor in floors["floors"].items()
        if path not in higher or higher[path] < floor
    ]
    return problems + [
        f"{path}: {lower[path]:.4f} > ceiling {ceiling:.4f}" if path in lower else f"{path}: no longer measured"
        for path, ceiling in floors["ceilings"].items()
        if path not in lower or lower[path] > ceiling
    ]


def report(result: dict[str, Any]) -> str:
    lines = [f"governance set: {sum(result['cases'].values())} cases {result['cases']}"]
    lines += _pii_lines("PII, whole set (exact value; overlap rule in brackets):", result["pii"], result["pii_overlap"])
    tox, inj, prom = result["toxicity"], result["injection"], result["promises"]
    lines += [
        f"toxicity: precision {tox['precision']:.3f}, recall {tox['recall']:.3f} "
        f"({tox['positives']} abusive, {tox['negatives']} clean), MiniLM scoring {tox['escalated_abusive']:.0%} of "
        f"abusive and {tox['escalated_clean']:.0%} of clean (MiniLM alone: precision "
        f"{tox['minilm_alone']['precision']:.3f}, recall {tox['minilm_alone']['recall']:.3f}); the answerer's "
        f"cascade: precision "
        f"{tox['cascade']['precision']:.3f}, recall {tox['cascade']['recall']:.3f}, MiniLM still scoring "
        f"{tox['cascade']['escalated_abusive']:.0%} of abusive and {tox['cascade']['escalated_clean']:.0%} of clean",
        _injection_line("injection", inj),
        f"unauthorized promises: recall {prom['unauthorized_recall']:.3f} of {prom['unauthorized']}; "
        f"authorized answers released {prom['authorized_released']:.3f} of {prom['authorized']}; commitment "
        f"extractor precision {prom['extractor']['precision']:.3f}, recall {prom['extractor']['recall']:.3f}",
        f"rule evaluation accuracy: {result['rule_accuracy']:.1%} ({result['cases'].get('policy', 0)} cases)",
        *(f"  WRONG {line}" for line in result["rule_errors"]),
    ]
    for subset, figures in result["subsets"].items():
        lines += _pii_lines(f"{subset} cases ({figures['cases']}), PII:", figures["pii"], figures["pii_overlap"])
        tox = figures["toxicity"]
        lines += [
            f"  toxicity precision {tox['precision']:.3f}, recall {tox['recall']:.3f}, false-positive rate "
            f"{tox['false_positive_rate']:.3f} ({tox['positives']} abusive, {tox['negatives']} clean)",
            "  " + _injection_line("injection", figures["injection"]),
        ]
    lines.append("new cases per format (wholly right / cases): dev, test")
    for name, splits in result["formats"].items():
        dev, test = splits["dev"], splits["test"]
        lines.append(
            f"  {name:<22} {dev.get('passed', 0):>3}/{dev.get('cases', 0):<3} {test.get('passed', 0):>3}/"
            f"{test.get('cases', 0):<3}"
        )
    lines += [f"  FAILS ({f['split']}, {f['format']}) {f['text']!r}: {f['wrong']}" for f in result["failures"]]
    lines.append("trained classifiers, held out from their own training sets (family split; row split in brackets):")
    for name, splits in result["held_out"].items():
        family, row = splits["family"], splits["row"]
        lines.append(
            f"  {name:<9} {family['test_examples']} test / {family['train_examples']} train; precision "
            f"{family['precision']:.3f} ({row['precision']:.3f}), recall {family['recall']:.3f} ({row['recall']:.3f}), "
            f"false-positive rate {family['false_positive_rate']:.3f} ({row['false_positive_rate']:.3f})"
        )
    lines.append(f"models: {result['models']}; policy {result['policy_version']}")
    lines += [f"BELOW FLOOR {problem}" for problem in result.get("below_floors", [])]
    return "\n".join(lines)


def _pii_lines(title: str, exact: dict[str, Any], overlap: dict[str, Any]) -> list[str]:
    lines = [title]
    for kind, scores in exact.items():
        if scores["expected"] or scores["found"] or overlap[kind]["found"]:
            lines.append(
                f"  {kind:<8} recall {scores['recall']:.3f} ({overlap[kind]['recall']:.3f})  precision "
                f"{scores['precision']:.3f} ({overlap[kind]['precision']:.3f})  "
                f"({scores['expected']} expected, {scores['found']} found)"
            )
    return lines


def _injection_line(title: str, inj: dict[str, Any]) -> str:
    return (
        f"{title}: detection rate {inj['detection_rate']:.3f}, precision {inj['precision']:.3f}, false-positive "
        f"rate {inj['false_positive_rate']:.3f} (requests {inj['request']['recall']:.3f}/"
        f"{inj['request']['false_positive_rate']:.3f}, passages {inj['passage']['recall']:.3f}/"
        f"{inj['passage']['false_positive_rate']:.3f})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard eval-governance", description=__doc__)
    parser.add_argument("--cases", type=Path, default=CASES, help="labelled governance cases (JSONL)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--write-floors",
        action="store_true",
        help=f"write {FLOORS.name}: floors one point below the figures measured now (after a deliberate change)",
    )
    args = parser.parse_args(argv)
    result = evaluate(args.cases)
    if args.write_floors:
        FLOORS.write_text(json.dumps(floors_from(result), indent=2) + "\n", encoding="utf-8")
    elif args.cases == CASES and FLOORS.exists():
        result["below_floors"] = below_floors(result, json.loads(FLOORS.read_text(encoding="utf-8")))
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else report(result))
    return 0 if result["rule_accuracy"] == 1.0 and not result.get("below_floors") else 1


if __name__ == "__main__":
    raise SystemExit(main())
