"""The answer-toxicity cascade's cheap model: split by families of near-copies, its sure-clean threshold taken from
the validation families only, and on the test families it lets no abusive text past that MiniLM would catch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from services.answerer.stage import load_toxicity
from services.governor import char_ngram
from services.governor.char_ngram import CheapToxicity, Splits, families, family_splits, sure_clean_threshold
from services.governor.classifiers import TOXICITY

Labelled = tuple[list[str], NDArray[np.int_], Splits]


@pytest.fixture(scope="module")
def cheap() -> CheapToxicity:
    return char_ngram.ensure_trained()


@pytest.fixture(scope="module")
def labelled() -> Labelled:
    texts, labels = TOXICITY.load()
    return texts, labels, family_splits(texts, labels)


def test_near_copies_fall_in_one_family() -> None:
    texts = [
        "listen, do your job you halfwit",
        "DO YOUR JOB YOU IMBECILE!!!",
        "what time do you open on sunday",
        "what time do you close on the 24th",
    ]
    ids = families(texts)
    assert ids[0] == ids[1] and ids[2] == ids[3] and ids[0] != ids[2]


def test_no_family_straddles_two_splits_and_every_row_is_in_one(labelled: Labelled) -> None:
    texts, _, splits = labelled
    ids = families(texts)
    parts = [splits.train, splits.validation, splits.test]
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(texts)))
    held = [set(ids[rows].tolist()) for rows in parts]
    assert not held[0] & held[1] and not held[0] & held[2] and not held[1] & held[2]


def test_the_card_threshold_lies_below_every_abusive_validation_text(cheap: CheapToxicity, labelled: Labelled) -> None:
    texts, labels, splits = labelled
    card = char_ngram.read_card(char_ngram.artifact_dir())
    assert card is not None and card["sure_clean_below"] == cheap.sure_clean_below
    scores = np.array([cheap.score(texts[i]) for i in splits.validation])
    abusive = scores[labels[splits.validation] == 1]
    assert abusive.min() > cheap.sure_clean_below
    expected = sure_clean_threshold(scores, labels[splits.validation], TOXICITY.threshold)
    assert cheap.sure_clean_below == pytest.approx(expected)


def test_the_cascade_catches_every_abusive_test_text_minilm_catches(cheap: CheapToxicity, labelled: Labelled) -> None:
    texts, labels, splits = labelled
    abusive = [texts[i] for i in splits.test if labels[i] == 1]
    caught = [text for text, p in zip(abusive, load_toxicity().probabilities(abusive), strict=True) if p >= 0.5]
    lost = [text for text in caught if cheap.sure_clean(cheap.score(text))]
    assert caught and lost == []


def test_the_card_describes_the_recomputed_split_and_no_test_text_is_trained_on(labelled: Labelled) -> None:
    texts, _, splits = labelled
    card = char_ngram.read_card(char_ngram.artifact_dir())
    assert card is not None
    assert card["split"]["train"]["abusive"] + card["split"]["train"]["clean"] == len(splits.train)
    assert not {texts[i] for i in splits.test} & {texts[i] for i in splits.train}


def test_case_punctuation_and_digits_do_not_change_the_hashed_features() -> None:
    buckets, values = char_ngram.features("Shut up, you IDIOT!!! 42")
    again, _ = char_ngram.features("shut up you idiot 17")
    assert np.array_equal(buckets, again) and np.all(np.diff(buckets) > 0)
    assert float(values @ values) == pytest.approx(1.0)


def test_a_missing_or_stale_artifact_is_trained_again_to_the_same_model(tmp_path: Path) -> None:
    first = char_ngram.ensure_trained(out=tmp_path)
    card_path = tmp_path / "card.json"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card["data"]["sha256"] = "trained on an older toxicity.jsonl"
    card_path.write_text(json.dumps(card), encoding="utf-8")
    again = char_ngram.ensure_trained(out=tmp_path)
    retrained = char_ngram.read_card(tmp_path)
    assert retrained is not None and retrained["data"]["sha256"] == TOXICITY.data_sha256()
    assert (again.version, again.sure_clean_below) == (first.version, first.sure_clean_below)
