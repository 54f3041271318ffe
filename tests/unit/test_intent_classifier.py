"""The trained intent classifier: held-out quality, reproducibility, unseen phrasings, the card, retraining."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.router.intents.classifier import IntentClassifier, ensure_trained
from services.router.intents.dataset import DEFAULT_DATA_PATH, data_sha256, load_examples
from services.router.intents.train import train
from services.shared import model_artifact as artifact
from services.shared.embedder import SentenceEmbedder
from services.shared.intents import INTENTS
from services.shared.model_artifact import IntentArtifactError

# Measured with seed 20 on 157 held-out examples: accuracy 0.847, macro-F1 0.845 (5-fold CV on the training
# split agrees: 0.86 +- 0.03). The split and the embeddings are deterministic, so the margin only has to absorb
# float differences between CPUs and onnxruntime builds (a flip or two), while a broken pipeline (wrong pooling,
# shuffled labels, a lost intent) lands far below: chance is 0.10.
MIN_HELD_OUT_ACCURACY = 0.80
MIN_HELD_OUT_MACRO_F1 = 0.80
# small_talk_other is the catch-all and the weakest (0.64); an intent below this has collapsed
MIN_PER_INTENT_F1 = 0.45

# Written for this test, not taken from the data set (checked below); one miss in all is tolerated, none is
# expected today except that "are you hiring for the holidays" reads as store_hours to the model.
UNSEEN_PHRASINGS: dict[str, list[str]] = {
    "store_hours": [
        "what time does the Harbor Point store open on saturday",
        "are you open on good friday",
        "closing time for store 212 tonight?",
        "hrs for the westside location on sunday pls",
    ],
    "stock_check": [
        "do you have the black Converse high tops in a 9",
        "stock chk upc 88412 at store 318",
        "is the Ninja Creami in stock at any store near me",
        "any size L left in the grey North Face vest",
    ],
    "price_check": [
        "how much is the 75 inch Sony tv",
        "what's the price on the cordless leaf blower",
        "price check sku 20417, no tag",
        "how much do the AA batteries cost",
    ],
    "discount_request": [
        "can you take 15% off, the box is crushed",
        "will you price match Walmart on this blender",
        "do you have a discount for nurses",
        "can I use this coupon on the sale item",
    ],
    "return_or_refund": [
        "I need to return this jacket, it's too small",
        "how do I get my money back for the broken kettle",
        "can I exchange this lamp without the box",
        "refund to my visa please, return of order 4412",
    ],
    "order_status": [
        "where is my order from last tuesday",
        "has order 771203 shipped yet",
        "is my pickup order ready, name is Okafor",
        "my package tracking says delayed, when will it come",
    ],
    "loyalty_account": [
        "how many reward points have I got",
        "I forgot my rewards card, can you find me by phone",
        "my points from friday's purchase are missing",
        "how do I join the membership program",
    ],
    "product_question": [
        "is this kettle cordless",
        "does the robot vacuum work on thick carpet",
        "are these running shoes good for trail running",
        "what's the difference between the two blenders",
    ],
    "complaint": [
        "the cashier was rude and ignored me",
        "I've waited 45 minutes and no one has helped me, ridiculous",
        "your store is always dirty",
        "I want to complain about the delivery driver",
    ],
    "small_talk_other": [
        "hello!",
        "thanks for your help",
        "good afternoon",
        "are you hiring for the holidays",
    ],
}


@pytest.fixture(scope="session")
def embedder() -> SentenceEmbedder:
    return SentenceEmbedder()


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory: pytest.TempPathFactory, embedder: SentenceEmbedder) -> Path:
    directory = tmp_path_factory.mktemp("intent-model")
    train(DEFAULT_DATA_PATH, directory, embedder=embedder)
    return directory


@pytest.fixture(scope="session")
def card(trained_dir: Path) -> dict[str, Any]:
    loaded = artifact.read_card(trained_dir)
    assert loaded is not None
    return loaded


@pytest.fixture(scope="session")
def classifier(trained_dir: Path, embedder: SentenceEmbedder) -> IntentClassifier:
    return IntentClassifier.load(trained_dir, embedder=embedder)


def test_held_out_accuracy_and_macro_f1_clear_the_measured_floor(card: dict[str, Any]) -> None:
    evaluation = card["evaluation"]
    assert evaluation["accuracy"] >= MIN_HELD_OUT_ACCURACY
    assert evaluation["macro_f1"] >= MIN_HELD_OUT_MACRO_F1
    assert set(evaluation["per_intent_f1"]) == set(INTENTS)
    assert min(evaluation["per_intent_f1"].values()) >= MIN_PER_INTENT_F1


def test_held_out_split_is_a_fifth_of_the_data_and_stratified(card: dict[str, Any]) -> None:
    evaluation = card["evaluation"]
    assert evaluation["train_examples"] + evaluation["test_examples"] == card["data"]["examples"]
    assert evaluation["test_examples"] == pytest.approx(0.2 * card["data"]["examples"], abs=len(INTENTS))


def test_card_records_data_hash_embedder_metrics_and_version(
    card: dict[str, Any], classifier: IntentClassifier, embedder: SentenceEmbedder
) -> None:
    assert card["data"]["sha256"] == data_sha256(DEFAULT_DATA_PATH)
    assert card["data"]["examples"] == len(load_examples())
    assert card["embedder"] == embedder.version
    assert card["version"] == classifier.version
    assert card["classifier"]["seed"] == card["evaluation"]["seed"]
    assert card["throughput"]["single_per_s"] > 0
    assert card["created_at"]


@pytest.mark.parametrize("intent", INTENTS)
def test_unseen_phrasings_are_classified_as_their_intent(classifier: IntentClassifier, intent: str) -> None:
    phrasings = UNSEEN_PHRASINGS[intent]
    predicted = [prediction.intent for prediction in classifier.classify_many(phrasings)]
    misses = [(text, got) for text, got in zip(phrasings, predicted, strict=True) if got != intent]
    assert len(misses) <= 1, misses


def test_unseen_phrasings_miss_at_most_once_in_all(classifier: IntentClassifier) -> None:
    texts = [text for phrasings in UNSEEN_PHRASINGS.values() for text in phrasings]
    expected = [intent for intent, phrasings in UNSEEN_PHRASINGS.items() for _ in phrasings]
    predicted = [prediction.intent for prediction in classifier.classify_many(texts)]
    assert sum(want != got for want, got in zip(expected, predicted, strict=True)) <= 1


def test_unseen_phrasings_are_not_in_the_data_set() -> None:
    known = {" ".join(example.text.lower().split()) for example in load_examples()}
    for phrasings in UNSEEN_PHRASINGS.values():
        assert not known & {" ".join(text.lower().split()) for text in phrasings}


def test_prediction_exposes_runner_up_and_probabilities(classifier: IntentClassifier) -> None:
    prediction = classifier.classify("is the blue linen shirt in stock in a large")
    assert prediction.intent == "stock_check"
    assert prediction.runner_up != prediction.intent
    assert 0.0 <= prediction.runner_up_confidence <= prediction.confidence <= 1.0
    probabilities = classifier.probabilities(["hi", "where is my order"])
    assert probabilities.shape == (2, len(INTENTS))
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    assert set(classifier.intents) == set(INTENTS)


def test_classify_agrees_with_classify_many(classifier: IntentClassifier) -> None:
    texts = ["what time do you close", "price chk sku 4471", "I want a refund"]
    singles = [classifier.classify(text) for text in texts]
    batched = classifier.classify_many(texts)
    assert [p.intent for p in singles] == [p.intent for p in batched]
    assert [p.confidence for p in singles] == pytest.approx([p.confidence for p in batched], abs=1e-5)


def test_same_seed_trains_identical_metrics_and_weights(
    tmp_path: Path, trained_dir: Path, card: dict[str, Any], embedder: SentenceEmbedder
) -> None:
    data = tmp_path / "intents.jsonl"
    shutil.copyfile(DEFAULT_DATA_PATH, data)
    again = ensure_trained(tmp_path / "model", data_path=data, embedder=embedder)
    assert again.card["evaluation"] == card["evaluation"]
    assert again.version == card["version"]
    first, second = artifact.load_model(trained_dir), artifact.load_model(tmp_path / "model")
    assert first.classes == second.classes
    assert np.array_equal(first.coef, second.coef)
    assert np.array_equal(first.intercept, second.intercept)


def test_ensure_trained_keeps_a_current_artifact_and_retrains_when_the_data_changes(
    tmp_path: Path, trained_dir: Path, embedder: SentenceEmbedder
) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(trained_dir, model_dir)
    kept = ensure_trained(model_dir, embedder=embedder)
    assert kept.card == json.loads((trained_dir / artifact.CARD_FILE).read_text())

    # every other line: a smaller set that still has every intent, and trains in half the time
    data = tmp_path / "intents.jsonl"
    data.write_text("".join(DEFAULT_DATA_PATH.read_text().splitlines(keepends=True)[::2]))
    retrained = ensure_trained(model_dir, data_path=data, embedder=embedder)
    assert retrained.card["data"]["sha256"] == data_sha256(data)
    assert retrained.card["data"]["examples"] == len(load_examples(data))
    assert retrained.version != kept.version


def test_ensure_trained_replaces_an_unreadable_card(
    tmp_path: Path, trained_dir: Path, embedder: SentenceEmbedder
) -> None:
    shutil.copytree(trained_dir, tmp_path, dirs_exist_ok=True)
    (tmp_path / artifact.CARD_FILE).write_text("{truncated")
    with pytest.raises(IntentArtifactError, match="not JSON"):
        IntentClassifier.load(tmp_path, embedder=embedder)
    data = tmp_path / "intents.jsonl"
    data.write_text("".join(DEFAULT_DATA_PATH.read_text().splitlines(keepends=True)[1::3]))
    assert ensure_trained(tmp_path, data_path=data, embedder=embedder).card["data"]["sha256"] == data_sha256(data)


def test_load_refuses_a_directory_without_a_model(tmp_path: Path, embedder: SentenceEmbedder) -> None:
    with pytest.raises(IntentArtifactError, match="no trained intent model"):
        IntentClassifier.load(tmp_path, embedder=embedder)


def test_load_refuses_weights_that_do_not_match_their_card(
    tmp_path: Path, trained_dir: Path, embedder: SentenceEmbedder
) -> None:
    shutil.copytree(trained_dir, tmp_path, dirs_exist_ok=True)
    model = artifact.load_model(tmp_path)
    tampered = artifact.LinearIntentModel(model.classes, model.coef * 2.0, model.intercept)
    card = json.loads((tmp_path / artifact.CARD_FILE).read_text())
    artifact.save(tmp_path, tampered, card)
    with pytest.raises(IntentArtifactError, match="do not match"):
        IntentClassifier.load(tmp_path, embedder=embedder)


# The cascade on the test template families (212 texts no model was trained or tuned on, seed-fixed split), measured
# 2026-12-05: MiniLM alone 0.863, the cheap model alone 0.840, the cascade 0.877 with 46% escalated to MiniLM. The
# floors hold what the cascade must keep: never more than a point under MiniLM alone, and most of the texts it is
# sure of decided without MiniLM.
MIN_CASCADE_TEST_ACCURACY = 0.85
MAX_CASCADE_LOSS_TO_MINILM = 0.01
MAX_ESCALATED = 0.60


def test_cascade_on_held_out_template_families_keeps_minilm_accuracy(card: dict[str, Any]) -> None:
    test = card["cascade"]["test"]
    assert test["examples"] >= 150
    assert test["cascade_accuracy"] >= MIN_CASCADE_TEST_ACCURACY
    assert test["cascade_accuracy"] >= test["minilm_accuracy"] - MAX_CASCADE_LOSS_TO_MINILM
    assert test["cascade_macro_f1"] >= test["minilm_macro_f1"] - MAX_CASCADE_LOSS_TO_MINILM
    assert test["escalated"] <= MAX_ESCALATED
    assert 0.0 < card["cascade"]["decide_at"] <= 1.0


def test_cheap_model_decides_alone_only_at_the_cards_threshold(classifier: IntentClassifier) -> None:
    assert classifier.cheap is not None
    texts = [example.text for example in load_examples()][:200] + [
        phrase for phrases in UNSEEN_PHRASINGS.values() for phrase in phrases
    ]
    cheap = classifier.classify_cheaply(texts)
    probabilities = classifier.cheap.probabilities(texts)
    for prediction, row in zip(cheap, probabilities, strict=True):
        assert (prediction is not None) == (row.max() >= classifier.cheap.decide_at)
        if prediction is not None:
            assert prediction.confidence == pytest.approx(row.max())
    decided = [p for p in cheap if p is not None]
    assert 0 < len(decided) < len(texts), "the cascade both decides and escalates on this mix"
    # the cascade's answer is the cheap one where it decided, MiniLM's elsewhere
    whole = classifier.classify_many(texts)
    minilm = classifier.classify_embeddings(classifier.embedder.embed(texts))
    for got, first, second in zip(whole, cheap, minilm, strict=True):
        want = first if first is not None else second  # MiniLM's vectors differ in the last bits by batch
        assert (got.intent, got.runner_up) == (want.intent, want.runner_up)
        assert got.confidence == pytest.approx(want.confidence, abs=1e-5)


def test_choose_threshold_is_the_lowest_matching_minilm_accuracy() -> None:
    from services.router.intents.cascade import choose_threshold

    expected = np.array([0, 1, 0, 1])
    minilm = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])  # all right
    cheap = np.array([[0.95, 0.05], [0.1, 0.9], [0.4, 0.6], [0.45, 0.55]])  # sure and right twice, unsure wrong
    assert choose_threshold(cheap, minilm, expected) == pytest.approx(0.9)
    always_wrong = cheap[:, ::-1]
    assert choose_threshold(always_wrong, minilm, expected) == 1.0  # never decides cheaply
