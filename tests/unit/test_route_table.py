"""The route table: the repository's file validates, bad files are refused with file, key and fix, and decisions
follow intents, conditions, the low-confidence rule and provider health, with their reason and version."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.router.intents.classifier import IntentPrediction
from services.settings import get_settings
from services.shared.intents import INTENTS
from services.shared.route_table import RouteTable, RouteTableError, load_route_table
from services.wire.models import Channel, Request, RouteKind

REPO_TABLE = get_settings().route_table


def repo_table_data() -> dict[str, Any]:
    data = yaml.safe_load(REPO_TABLE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def table() -> RouteTable:
    return load_route_table(REPO_TABLE)


def request(text: str = "do you have oat milk", **fields: Any) -> Request:
    values: dict[str, Any] = {
        "request_id": "r-1",
        "store_id": "0417",
        "terminal_id": "pos-1",
        "channel": Channel.POS,
        "text": text,
        "created_at": 0,
    }
    values.update(fields)
    return Request(**values)


def predicted(intent: str, confidence: float = 0.91, runner_up: str = "price_check") -> IntentPrediction:
    return IntentPrediction(intent, confidence, runner_up, round(1.0 - confidence, 2))


# -- the repository's table ------------------------------------------------------------------------------------


def test_the_repository_route_table_validates_and_routes_every_intent(table: RouteTable) -> None:
    assert set(table.spec.routes) == set(INTENTS)
    assert table.spec.low_confidence.route == "model.large"
    for intent in INTENTS:
        decision = table.decide(request(), predicted(intent))
        assert decision.intent == intent


def test_store_hours_keep_the_deterministic_workflow_route_without_a_provider(table: RouteTable) -> None:
    decision = table.decide(request("what time do you close?"), predicted("store_hours", 0.99))
    assert decision.route_id == "workflow.store_hours"
    assert decision.kind == RouteKind.WORKFLOW
    assert decision.provider is None


DATA_INTENTS = {"stock_check", "price_check", "discount_request", "return_or_refund", "loyalty_account"}


def test_data_questions_go_to_their_workflow_first_then_to_the_intents_model_route(table: RouteTable) -> None:
    for intent in sorted(DATA_INTENTS):
        decision = table.decide(request(), predicted(intent))
        assert decision.route_id == f"workflow.{intent}" and decision.kind == RouteKind.WORKFLOW
        assert decision.provider is None
        assert decision.fallbacks == [f"model.{intent}", "model.large", "workflow.escalate"]
        assert f"route workflow.{intent} (data workflow of model.{intent})" in decision.reason


def test_a_declined_workflow_falls_back_to_the_intents_route_and_the_reason_says_why(table: RouteTable) -> None:
    decision = table.decide(request(), predicted("stock_check"))
    moved = table.fall_back(decision, "no product in the catalogue matches the request")
    assert (moved.route_id, moved.kind, moved.provider) == ("model.stock_check", RouteKind.SMALL_MODEL, "default")
    assert moved.fallbacks == ["model.large", "workflow.escalate"]
    assert moved.reason.endswith(
        "; workflow.stock_check declined (no product in the catalogue matches the request): took model.stock_check"
    )
    last = table.fall_back(table.fall_back(moved, "x"), "y")
    assert last.route_id == "workflow.escalate" and last.fallbacks == []
    assert table.fall_back(last, "z").route_id == "workflow.escalate"


def test_order_status_has_no_model_route_staff_take_what_the_workflow_cannot(table: RouteTable) -> None:
    decision = table.decide(request("where is order 4411"), predicted("order_status"))
    assert (decision.route_id, decision.fallbacks) == ("workflow.order_status", ["workflow.escalate"])


def test_other_intents_go_to_model_routes_of_the_default_provider(table: RouteTable) -> None:
    for intent in INTENTS:
        if intent in DATA_INTENTS or intent in ("store_hours", "order_status"):
            continue
        decision = table.decide(request(), predicted(intent))
        assert decision.kind != RouteKind.WORKFLOW
        assert decision.provider == "default"
        assert decision.fallbacks


def test_the_version_is_the_files_version_plus_a_hash_of_its_content(table: RouteTable) -> None:
    digest = hashlib.sha256(REPO_TABLE.read_bytes()).hexdigest()[:12]
    assert table.version == f"{repo_table_data()['version']}+{digest}"
    assert table.decide(request(), predicted("stock_check")).route_table_version == table.version


# -- decisions ---------------------------------------------------------------------------------------------------


def test_the_reason_names_the_intent_the_runner_up_and_the_route(table: RouteTable) -> None:
    decision = table.decide(request(), IntentPrediction("product_question", 0.91, "price_check", 0.05))
    assert decision.route_id == "model.product_question"
    assert decision.confidence == 0.91
    assert decision.reason == (
        "intent product_question 0.91 (runner-up price_check 0.05); route model.product_question for the intent"
    )


def test_a_prediction_under_the_threshold_takes_the_safer_low_confidence_route(table: RouteTable) -> None:
    decision = table.decide(request("what time do you close?"), predicted("store_hours", 0.41, "complaint"))
    assert decision.route_id == "model.large"
    assert decision.kind == RouteKind.LARGE_MODEL
    assert decision.intent == "store_hours"
    assert "low-confidence rule (0.41 < 0.55)" in decision.reason


def test_a_low_confidence_data_question_tries_its_workflow_then_the_safer_route(table: RouteTable) -> None:
    guessed = table.decide(request("orbit watch 41mm, qty?"), predicted("stock_check", 0.37, "complaint"))
    assert (guessed.route_id, guessed.fallbacks) == ("workflow.stock_check", ["model.large", "workflow.escalate"])
    assert "(data workflow first) by the low-confidence rule (0.37 < 0.55)" in guessed.reason
    # the runner-up's workflow where the guess has none: a workflow declines what its data does not answer
    runner_up = table.decide(request("waxed jacket in L olive?"), predicted("small_talk_other", 0.42, "stock_check"))
    assert runner_up.route_id == "workflow.stock_check" and runner_up.fallbacks[0] == "model.large"


def test_a_prediction_at_the_threshold_keeps_its_intent_route(table: RouteTable) -> None:
    assert table.decide(request(), predicted("product_question", 0.55)).route_id == "model.product_question"


def test_a_long_stock_question_is_sent_to_the_large_model_by_its_length_condition(table: RouteTable) -> None:
    decision = table.decide(request("x" * 300), predicted("stock_check"))
    assert decision.route_id == "model.large"
    assert "via condition chars=300>=240" in decision.reason


def test_a_gold_members_discount_request_goes_to_the_discount_workflow_which_reads_the_tier_rules(
    table: RouteTable,
) -> None:
    gold = request("can I get 10% off", attributes={"customer_tier": "Gold"})
    assert table.decide(gold, predicted("discount_request")).route_id == "workflow.discount_request"


def test_a_call_centre_complaint_is_escalated_to_a_person(table: RouteTable) -> None:
    decision = table.decide(request("you lost my parcel", channel=Channel.CALL_CENTER), predicted("complaint"))
    assert decision.route_id == "workflow.escalate"
    assert decision.provider is None
    assert "via condition channel=CALL_CENTER" in decision.reason
    assert table.decide(request("you lost my parcel"), predicted("complaint")).route_id == "model.complaint"


def write_table(directory: Path, data: dict[str, Any], name: str = "route_table.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_conditions_are_tried_in_order_and_every_key_of_one_must_match(tmp_path: Path) -> None:
    data = repo_table_data()
    data["routes"]["price_check"]["conditions"] = [
        {"channels": ["KIOSK"], "store_ids": ["0001"], "route": "workflow.escalate"},
        {"channels": ["KIOSK", "WEB"], "min_confidence": 0.8, "route": "model.large"},
        {"channels": ["KIOSK"], "route": "model.general"},
    ]
    table = load_route_table(write_table(tmp_path, data))
    kiosk = request("how much is this", channel=Channel.KIOSK)
    first = table.decide(kiosk.model_copy(update={"store_id": "0001"}), predicted("price_check"))
    assert first.route_id == "workflow.escalate"
    assert "channel=KIOSK, store_id=0001" in first.reason
    assert table.decide(kiosk, predicted("price_check", 0.9)).route_id == "model.large"
    assert table.decide(kiosk, predicted("price_check", 0.7)).route_id == "model.general"
    assert table.decide(request("how much is this"), predicted("price_check")).route_id == "workflow.price_check"


def test_an_intent_the_table_does_not_know_takes_the_default_route(table: RouteTable) -> None:
    decision = table.decide(request(), predicted("gift_wrapping", 0.9))
    assert decision.route_id == "model.general"
    assert "default route" in decision.reason


def test_a_route_whose_provider_is_unhealthy_is_skipped_for_its_first_healthy_fallback(tmp_path: Path) -> None:
    data = repo_table_data()
    data["shared_routes"][1]["provider"] = "backup"  # model.large
    table = load_route_table(write_table(tmp_path, data))
    decision = table.decide(
        request(), predicted("product_question"), unhealthy_providers={"default": "p95 2.4 s over 1.5 s limit for 30 s"}
    )
    assert decision.route_id == "model.large"
    assert decision.provider == "backup"
    assert decision.fallbacks == ["workflow.escalate"]
    assert (
        "skipped model.product_question: provider default is unhealthy (p95 2.4 s over 1.5 s limit for 30 s); "
        "took model.large" in decision.reason
    )


def test_when_every_model_provider_is_unhealthy_the_workflow_fallback_is_taken(table: RouteTable) -> None:
    decision = table.decide(request(), predicted("product_question"), unhealthy_providers={"default": "down"})
    assert decision.route_id == "workflow.escalate"
    assert decision.kind == RouteKind.WORKFLOW
    assert decision.fallbacks == []


def test_a_route_without_a_healthy_fallback_is_kept_and_the_reason_says_so(tmp_path: Path) -> None:
    data = repo_table_data()
    data["routes"]["product_question"]["fallbacks"] = ["model.large"]
    table = load_route_table(write_table(tmp_path, data))
    decision = table.decide(request(), predicted("product_question"), unhealthy_providers={"default": "down"})
    assert decision.route_id == "model.product_question"
    assert decision.fallbacks == ["model.large"]
    assert "kept model.product_question: no healthy fallback" in decision.reason


def test_a_healthy_provider_list_changes_nothing(table: RouteTable) -> None:
    decision = table.decide(request(), predicted("price_check"), unhealthy_providers={"other": "down"})
    assert decision.route_id == "workflow.price_check"
    assert "skipped" not in decision.reason


# -- bad files ---------------------------------------------------------------------------------------------------

Edit = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Edit:
    """An edit that sets a dotted path (list indexes as numbers) in the table data."""

    def edit(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return edit


def _delete(path: str) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[part]
        del node[last]

    return edit


def _extra_intent(data: dict[str, Any]) -> None:
    route = copy.deepcopy(data["routes"]["return_or_refund"])
    route["route_id"] = "model.refund"
    data["routes"]["refund"] = route


BAD_TABLES: list[tuple[str, Edit, str, str]] = [
    (
        "workflow naming a model route",
        _set("routes.stock_check.workflow", "model.large"),
        "routes.stock_check.workflow",
        "'model.large' is a large_model route: name a route of kind workflow",
    ),
    (
        "workflow naming an unknown route",
        _set("routes.stock_check.workflow", "workflow.stocktake"),
        "routes.stock_check.workflow",
        "unknown route id 'workflow.stocktake'",
    ),
    ("unknown intent", _extra_intent, "routes.refund", "unknown intent 'refund': use one of store_hours"),
    ("missing intent", _delete("routes.complaint"), "routes", "intent 'complaint' has no route: add routes.complaint"),
    (
        "unknown fallback",
        _set("routes.discount_request.fallbacks", ["model.large", "model.gigantic"]),
        "routes.discount_request.fallbacks[1]",
        "unknown route id 'model.gigantic': use a route_id defined under routes or shared_routes",
    ),
    (
        "duplicate route id",
        _set("routes.price_check.route_id", "model.stock_check"),
        "routes.price_check.route_id",
        "duplicate route id 'model.stock_check' (also at routes.stock_check): give each route its own id",
    ),
    ("bad kind", _set("routes.stock_check.kind", "medium_model"), "routes.stock_check.kind", "'large_model'"),
    (
        "threshold above 1",
        _set("low_confidence.threshold", 1.5),
        "low_confidence.threshold",
        "less than or equal to 1",
    ),
    ("threshold below 0", _set("low_confidence.threshold", -0.1), "low_confidence.threshold", "greater than"),
    (
        "workflow with a provider",
        _set("routes.store_hours.provider", "default"),
        "routes.store_hours.provider",
        "a workflow runs no model, yet names provider 'default': set provider: null",
    ),
    (
        "model route without a provider",
        _set("routes.price_check.provider", None),
        "routes.price_check.provider",
        "a small_model route needs a provider",
    ),
    (
        "fallback cycle",
        _set("shared_routes.1.fallbacks", ["model.general"]),
        "shared_routes[0].fallbacks",
        "fallbacks form a cycle model.large -> model.general -> model.large: remove one of them",
    ),
    (
        "fallback to itself",
        _set("routes.complaint.fallbacks", ["model.complaint"]),
        "routes.complaint.fallbacks[0]",
        "falls back to itself: remove it",
    ),
    (
        "fallback listed twice",
        _set("routes.order_status.fallbacks", ["model.large", "model.large"]),
        "routes.order_status.fallbacks[1]",
        "listed twice",
    ),
    (
        "misspelt key",
        _set("routes.stock_check.fallback", ["model.large"]),
        "routes.stock_check.fallback",
        "unknown key: remove it or fix its spelling "
        "(allowed here: route_id, kind, provider, fallbacks, conditions, workflow)",
    ),
    (
        "condition to an unknown route",
        _set("routes.complaint.conditions.0.route", "workflow.human"),
        "routes.complaint.conditions[0].route",
        "unknown route id 'workflow.human'",
    ),
    (
        "condition without keys",
        _set("routes.complaint.conditions", [{"route": "workflow.escalate"}]),
        "routes.complaint.conditions[0]",
        "a condition needs at least one of channels, store_ids",
    ),
    (
        "condition on an unknown channel",
        _set("routes.complaint.conditions.0.channels", ["PHONE"]),
        "routes.complaint.conditions[0].channels[0]",
        "'CALL_CENTER'",
    ),
    (
        "condition that can never match",
        _set("routes.complaint.conditions", [{"min_chars": 50, "max_chars": 10, "route": "workflow.escalate"}]),
        "routes.complaint.conditions[0]",
        "min_chars is above max_chars",
    ),
    ("unknown default route", _set("default_route", "model.huge"), "default_route", "unknown route id 'model.huge'"),
    (
        "unknown low-confidence route",
        _set("low_confidence.route", "human"),
        "low_confidence.route",
        "unknown route id 'human'",
    ),
    ("unquoted numeric version", _set("version", 3), "version", "quote it in YAML"),
    ("missing low-confidence rule", _delete("low_confidence"), "low_confidence", "required key is missing: add it"),
    ("bad route id", _set("routes.price_check.route_id", "Model Price"), "routes.price_check.route_id", "lower-case"),
]


@pytest.mark.parametrize(("edit", "key", "fix"), [case[1:] for case in BAD_TABLES], ids=[c[0] for c in BAD_TABLES])
def test_a_bad_table_is_refused_with_its_file_key_and_fix(tmp_path: Path, edit: Edit, key: str, fix: str) -> None:
    data = repo_table_data()
    edit(data)
    path = write_table(tmp_path, data)
    with pytest.raises(RouteTableError) as caught:
        load_route_table(path)
    lines = caught.value.problems
    assert any(line.startswith(f"{path}: {key}") and fix in line for line in lines), lines
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("text", "fix"),
    [
        ("version: '1'\nroutes: [unclosed\n", "is not valid YAML (line 3, column 1"),
        ("- just\n- a list\n", "must be a mapping with keys version, default_route"),
        ("", "must be a mapping"),
    ],
    ids=["syntax error", "a list", "empty file"],
)
def test_a_file_that_is_not_a_yaml_mapping_is_refused_with_its_name(tmp_path: Path, text: str, fix: str) -> None:
    path = tmp_path / "route_table.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RouteTableError, match=r"route_table\.yaml") as caught:
        load_route_table(path)
    assert fix in str(caught.value)


def test_an_intent_given_twice_is_refused_rather_than_silently_overridden(tmp_path: Path) -> None:
    text = REPO_TABLE.read_text(encoding="utf-8")
    twice = text.replace("  price_check:\n", "  price_check:\n    route_id: model.price\n  price_check:\n", 1)
    path = tmp_path / "route_table.yaml"
    path.write_text(twice, encoding="utf-8")
    with pytest.raises(RouteTableError, match="key 'price_check' is given twice in one mapping: keep one"):
        load_route_table(path)


def test_a_missing_file_is_refused_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(RouteTableError, match=r"nowhere\.yaml: cannot be read"):
        load_route_table(tmp_path / "nowhere.yaml")


def test_every_problem_in_a_file_is_reported_at_once(tmp_path: Path) -> None:
    data = repo_table_data()
    data["default_route"] = "model.huge"
    data["routes"]["store_hours"]["provider"] = "default"
    with pytest.raises(RouteTableError) as caught:
        load_route_table(write_table(tmp_path, data))
    assert len(caught.value.problems) == 2
