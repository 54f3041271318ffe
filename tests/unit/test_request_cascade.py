"""The governor's request cascade (char_ngram.RequestCascade): the cheap toxicity and injection models, with the
injection patterns, decide a request text without MiniLM only where all three are sure it is clean. The injection
model's threshold comes from its validation families; these tests re-check it, and that the cascade decides no
injection MiniLM or the patterns would catch, on the test families and on the governance set written apart."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from services.governor import char_ngram
from services.governor.char_ngram import RequestCascade, family_splits, sure_clean_threshold
from services.governor.classifiers import INJECTION
from services.governor.injection import injection_signals
from services.governor.stage import Analyzer
from services.pos.simulator import request_mix
from services.tools.eval.governance import CASES

# the share of the simulator's POS mix decided without MiniLM, one point under the 0.324 measured on 2026-12-05
POS_MIX_DECIDED_FLOOR = 0.31


@pytest.fixture(scope="module")
def cascade() -> RequestCascade:
    return char_ngram.request_cascade()


def test_the_injection_card_threshold_lies_below_every_injection_validation_text(cascade: RequestCascade) -> None:
    texts, labels = INJECTION.load()
    splits = family_splits(texts, labels)
    card = char_ngram.read_card(char_ngram.artifact_dir(INJECTION))
    assert card is not None and card["sure_clean_below"] == cascade.injection.sure_clean_below
    assert card["benign_requests"]["trained_on"] > 0
    scores = np.array([cascade.injection.score(texts[i]) for i in splits.validation])
    assert scores[labels[splits.validation] == 1].min() > cascade.injection.sure_clean_below
    expected = sure_clean_threshold(scores, labels[splits.validation], INJECTION.threshold)
    assert cascade.injection.sure_clean_below == pytest.approx(expected)
    # nothing the cheap model was tested on was trained on
    assert not {texts[i] for i in splits.test} & {texts[i] for i in splits.train}


def test_no_test_family_injection_is_decided_benign(cascade: RequestCascade) -> None:
    texts, labels = INJECTION.load()
    splits = family_splits(texts, labels)
    injections = [texts[i] for i in splits.test if labels[i] == 1]
    assert injections and [text for text in injections if cascade.sure(text) is not None] == []


def test_the_cascade_decides_no_labelled_injection_or_abuse_minilm_would_catch(
    cascade: RequestCascade, analyzer: Analyzer
) -> None:
    """Every injection and abusive case of the governance set (written apart from the training data), requests and
    passages alike: none that the patterns or MiniLM flag is decided clean by the cascade."""
    cases = [json.loads(line) for line in CASES.read_text(encoding="utf-8").splitlines() if line.strip()]
    injections = [c["text"] for c in cases if c["category"] == "injection" and c["injection"]]
    abusive = [c["text"] for c in cases if c["category"] == "toxicity" and c["label"] == "abusive"]
    flagged = [
        text
        for text, p in zip(injections, analyzer.injection.probabilities(injections), strict=True)
        if injection_signals(text) or p >= INJECTION.threshold
    ] + [text for text, p in zip(abusive, analyzer.toxicity.probabilities(abusive), strict=True) if p >= 0.5]
    assert len(flagged) > 60
    assert [text for text in flagged if cascade.sure(text) is not None] == []


def test_a_share_of_ordinary_till_requests_is_decided_without_minilm(cascade: RequestCascade) -> None:
    texts = [request.text for request in itertools.islice(request_mix(["0417", "0023"]), 1000)]
    decided = float(np.mean([cascade.sure(text) is not None for text in texts]))
    assert decided >= POS_MIX_DECIDED_FLOOR
