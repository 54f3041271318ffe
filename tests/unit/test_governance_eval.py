"""`make test` holds the governance figures to the floors committed beside the labelled cases (issue 17): PII
recall and precision per type scored by exact value, on the whole set and on the held-out test families of the
cases written apart from the recognizers; toxicity and injection precision, recall and false-positive rate; promise
recall; rule accuracy 1.0; the classifiers' figures with whole families held out. A recognizer that gets worse
fails here."""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from typing import Any

import numpy as np
import pytest

from services.governor.classifiers import INJECTION, held_out_rows
from services.shared import pii
from services.shared.families import near_duplicate_families
from services.tools.eval import governance


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    return governance.evaluate()


@pytest.fixture(scope="module")
def floors() -> dict[str, Any]:
    committed: dict[str, Any] = json.loads(governance.FLOORS.read_text(encoding="utf-8"))
    return committed


def test_every_governance_figure_is_at_or_above_its_committed_floor(
    result: dict[str, Any], floors: dict[str, Any]
) -> None:
    assert governance.below_floors(result, floors) == []
    assert result["rule_accuracy"] == 1.0, result["rule_errors"]


def test_the_floors_hold_each_pii_type_on_the_whole_set_and_on_the_new_test_families(floors: dict[str, Any]) -> None:
    for prefix in ("", "subsets.test."):
        for kind in ("PERSON", "EMAIL", "PHONE", "ACCOUNT", "ADDRESS"):
            assert f"{prefix}pii.{kind}.recall" in floors["floors"]
            assert f"{prefix}pii.{kind}.precision" in floors["floors"]
        assert f"{prefix}injection.false_positive_rate" in floors["ceilings"]
        assert f"{prefix}toxicity.false_positive_rate" in floors["ceilings"]
    assert floors["floors"]["rule_accuracy"] == 1.0
    assert floors["margin"] <= 0.01


def test_a_figure_that_falls_a_point_and_a_half_is_reported(result: dict[str, Any]) -> None:
    floors = governance.floors_from(result)
    fallen = copy.deepcopy(result)
    fallen["subsets"]["test"]["pii"]["ACCOUNT"]["recall"] -= 0.015
    fallen["injection"]["false_positive_rate"] += 0.015
    problems = governance.below_floors(fallen, floors)
    assert [problem.split(":")[0] for problem in problems] == [
        "subsets.test.pii.ACCOUNT.recall",
        "injection.false_positive_rate",
    ]


def test_an_iban_the_recognizers_stop_finding_fails_the_floors(
    result: dict[str, Any], floors: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pii, "iban_valid", lambda value: False)
    cases = [case for case in governance.load_cases() if case["category"] == "pii"]
    analyzer = type("Only", (), {"detector": pii.PiiDetector(use_ner=False)})()
    weakened = copy.deepcopy(result)
    found = governance.pii_outcomes(cases, analyzer)
    weakened["pii"] = governance.pii_scores(found["exact"])
    test_rows = [case.get("split") == "test" and case.get("set") == "new" for case in cases]
    weakened["subsets"]["test"]["pii"] = governance.pii_scores(
        [outcome for outcome, kept in zip(found["exact"], test_rows, strict=True) if kept]
    )
    problems = {problem.split(":")[0] for problem in governance.below_floors(weakened, floors)}
    assert {"pii.ACCOUNT.recall", "subsets.test.pii.ACCOUNT.recall"} <= problems


def test_a_pii_span_that_only_overlaps_the_value_is_a_false_positive_and_a_miss() -> None:
    text = "call +44 20 7946 0958 now"
    expected = [("PHONE", 5, 21)]
    exact = governance._outcomes(expected, [("PHONE", 9, 21)], governance._same_value(text))
    overlap = governance._outcomes(expected, [("PHONE", 9, 21)], governance._overlaps)
    assert exact == {("PHONE", "fp"): 1, ("PHONE", "fn"): 1}
    assert overlap == {("PHONE", "tp"): 1}
    trimmed = governance._outcomes(expected, [("PHONE", 4, 21)], governance._same_value(text))
    assert trimmed == {("PHONE", "tp"): 1}, "surrounding whitespace and punctuation are trimmed"


def test_the_new_cases_are_tagged_and_split_by_family() -> None:
    new = [case for case in governance.load_cases() if case.get("set") == "new"]
    assert len(new) >= 150
    splits: dict[str, set[str]] = defaultdict(set)
    per_format: dict[str, set[str]] = defaultdict(set)
    for case in new:
        splits[case["family"]].add(case["split"])
        per_format[case["format"]].add(case["split"])
    assert all(len(seen) == 1 for seen in splits.values()), "a family sits on one side only"
    assert all(seen == {"dev", "test"} for seen in per_format.values()), "every format has dev and test families"
    assert all(case.get("family") for case in governance.load_cases())


def test_a_template_filled_with_other_values_is_one_family_and_other_texts_are_not() -> None:
    families = near_duplicate_families(
        [
            "is the blue kettle still in the sale",
            "hey is the blue kettle still in the sale",
            "Hi, Ada Lovelace here, order 1815 never came",
            "Hi, Alan Turing here, order 1912 never came",
            "what time do you close on sunday",
        ]
    )
    assert families[0] == families[1] and families[2] == families[3]
    assert len({families[0], families[2], families[4]}) == 3


def test_the_family_split_never_puts_a_family_on_both_sides() -> None:
    texts, labels = INJECTION.load()
    families = near_duplicate_families(texts)
    train_rows, test_rows, _ = held_out_rows(texts, labels, by="family")
    assert not set(families[train_rows].tolist()) & set(families[test_rows].tolist())
    assert 0.2 < len(test_rows) / len(texts) < 0.3
    assert abs(float(np.mean(labels[test_rows])) - float(np.mean(labels))) < 0.05, "stratified by label"
